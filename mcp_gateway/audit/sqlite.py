"""SQLiteAuditSink: hash-chained records made durable by one writer thread with group commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mcp_gateway.audit.record import (
    GENESIS_HASH,
    AuditRecord,
    canonical_record_bytes,
    format_timestamp,
    new_event_id,
    storable,
)
from mcp_gateway.audit.schema import (
    INSERT_SQL,
    SCHEMA_DDL,
    SCHEMA_VERSION,
    SchemaError,
    read_head,
    read_tail,
    record_values,
    schema_version,
    uri_for,
    write_head,
)
from mcp_gateway.errors import AuditUnavailable

logger = logging.getLogger(__name__)

DISCONTINUITY_EVENT: Final = "audit_chain_discontinuity"
RECOVERED_EVENT: Final = "audit_store_recovered"

_Waiter = asyncio.Future[None]
# (record, waiter): a record without a waiter came from append_nowait; a waiter without a record is
# a flush() barrier.
_Item = tuple[AuditRecord | None, _Waiter | None]
_Settlement = tuple[_Waiter, BaseException | None]


@dataclass(frozen=True)
class AuditSinkStats:
    """Counters for /metrics and for tests; read without locking, so approximately consistent."""

    appended: int  # records committed
    commits: int  # transactions committed; appended / commits is the mean group size
    failed_batches: int  # transactions rolled back (disk full, read-only, I/O error, lock timeout)
    rejected: int  # records refused before writing: a field of the wrong type or outside JSON
    lost: int  # append_nowait records never written (queue full, failed batch, sink closed)
    queue_full: int  # append calls refused because the queue was full
    queue_depth: int
    largest_batch: int


def _settle(items: list[_Settlement]) -> None:
    for waiter, exc in items:
        if waiter.done():  # the caller was cancelled; the record was still written (or not)
            continue
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)


class SQLiteAuditSink:
    """An `AuditSink` over a SQLite file in WAL mode with synchronous=FULL.

    Every record is written by one thread: it takes everything queued (up to `max_batch`), inserts it
    in one transaction whose single commit makes the whole group durable, then wakes every waiter.
    Each row carries `prev_hash` and `hash` (see `record.chain_hash`), and the meta table's head
    checkpoint moves in the same transaction, so `audit verify` can tell a truncated tail.

    Waiters are asyncio futures: use it from asyncio (uvicorn, anyio's asyncio backend).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 10_000,
        max_batch: int = 1_000,
        busy_timeout_ms: int = 5_000,
        recovery_probe_seconds: float = 5.0,
        on_open: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """`on_open` runs in the writer thread once the schema is ready: a seam for tests, e.g.
        `PRAGMA max_page_count` to make the file "full", `PRAGMA query_only` to make it read-only.

        After a failed write, the writer tries again every `recovery_probe_seconds` while nothing else
        is queued, by writing an `audit_store_recovered` event: a gateway that /readyz reports as not
        ready gets no traffic, so without the probe it could never become ready again.
        """
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        if not recovery_probe_seconds > 0:
            raise ValueError("recovery_probe_seconds must be positive")
        self.path = Path(path)
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._busy_timeout_ms = busy_timeout_ms
        self._on_open = on_open
        self._probe_seconds = recovery_probe_seconds
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Item] = deque()
        self._accepting = False
        self._closing = False
        self._started = False
        self._healthy = False
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._head: tuple[int, str] = (0, GENESIS_HASH)
        # Written by the writer thread only:
        self._appended = self._commits = self._failed_batches = self._rejected = 0
        self._lost_in_batches = self._largest_batch = 0
        # (when, failed batches, lost records) at the first failure since the last good write:
        self._outage: tuple[float, int, int] | None = None
        # Written under self._cond only:
        self._dropped = self._queue_full = 0

    # -- the AuditSink protocol ---------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the database and continue its chain; raises AuditUnavailable if it can't."""
        if self._started:
            raise RuntimeError("SQLiteAuditSink.start() called twice")
        self._started = True
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._run, args=(ready,), name=f"audit-writer:{self.path.name}", daemon=True)
        thread.start()
        try:
            await asyncio.wrap_future(ready)
        except (sqlite3.Error, OSError, SchemaError) as exc:
            raise AuditUnavailable(f"cannot open the audit database {self.path}: {exc}") from exc

    async def append(self, record: AuditRecord) -> None:
        """Return once `record` is committed to disk; raise AuditUnavailable if it cannot be."""
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        with self._cond:
            if not self._accepting:
                raise AuditUnavailable("the audit store is not running")
            if len(self._queue) >= self._max_queue:
                # Fail closed rather than let a stalled disk grow memory without bound.
                self._queue_full += 1
                raise AuditUnavailable("the audit queue is full")
            self._queue.append((record, waiter))
            self._cond.notify()
        await waiter

    def append_nowait(self, record: AuditRecord) -> None:
        """Queue `record` to be written with the next group; a record that cannot be is counted as lost."""
        with self._cond:
            if self._accepting and len(self._queue) < self._max_queue:
                self._queue.append((record, None))
                self._cond.notify()
                return
            self._dropped += 1
            dropped = self._dropped
        if dropped & (dropped - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... loss, not every one
            logger.error("audit record dropped (%d so far): the audit store is full or not running", dropped)

    async def flush(self) -> None:
        """Wait until everything queued before this call has been written (or has failed)."""
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        with self._cond:
            if not self._accepting:
                return
            self._queue.append((None, waiter))
            self._cond.notify()
        await waiter

    async def aclose(self) -> None:
        """Write what is queued, then close the database. Later appends raise AuditUnavailable."""
        if not self._started:
            return
        with self._cond:
            self._accepting = False
            self._closing = True
            self._cond.notify()
        await asyncio.wrap_future(self._stopped)

    @property
    def healthy(self) -> bool:
        """False until started, after close, and while the last write attempt failed."""
        return self._accepting and self._healthy

    @property
    def head(self) -> tuple[int, str]:
        """The last committed (seq, hash): what `audit verify` prints and what to anchor elsewhere."""
        return self._head

    @property
    def stats(self) -> AuditSinkStats:
        return AuditSinkStats(
            appended=self._appended,
            commits=self._commits,
            failed_batches=self._failed_batches,
            rejected=self._rejected,
            lost=self._lost_in_batches + self._dropped,
            queue_full=self._queue_full,
            queue_depth=len(self._queue),
            largest_batch=self._largest_batch,
        )

    # -- the writer thread --------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._open()
        except BaseException as exc:
            ready.set_exception(exc)
            self._stopped.set_result(None)
            return
        with self._cond:
            self._accepting = self._healthy = True
        ready.set_result(None)
        try:
            self._drain_forever(conn)
        finally:
            with self._cond:
                self._accepting = False
                leftover = list(self._queue)
                self._queue.clear()
            self._fail(leftover, "the audit writer stopped")
            conn.close()
            self._stopped.set_result(None)

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Audit rows name users and may hold arguments: keep the file (and, after it, SQLite's
            # -wal and -shm files, which copy its mode) private to the gateway's user.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(
            uri_for(self.path, read_only=False),
            uri=True,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("audit database %s is in journal mode %s, not WAL", self.path, mode)
            conn.execute("PRAGMA synchronous = FULL")  # the commit is durable before the waiter wakes
            if schema_version(conn) is None:
                self._create_schema(conn)
            self._continue_chain(conn)
            if self._on_open is not None:
                self._on_open(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA_DDL:
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            if read_head(conn) is None and read_tail(conn) is None:
                write_head(conn, 0, GENESIS_HASH)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _continue_chain(self, conn: sqlite3.Connection) -> None:
        head = read_head(conn)
        tail = read_tail(conn) or (0, GENESIS_HASH)
        if head == tail:
            self._head = tail
            return
        # The table and its checkpoint disagree: rows were removed from the tail, or the checkpoint was
        # edited. Continue after the higher of the two so a removed tail stays visible as a seq gap to
        # `audit verify`, and say so in the log itself.
        self._head = tail if head is None or tail[0] >= head[0] else head
        detail = {
            "head_seq": None if head is None else head[0],
            "head_hash": None if head is None else head[1],
            "tail_seq": tail[0],
            "tail_hash": tail[1],
        }
        logger.error("audit database %s: the last row disagrees with the head checkpoint: %s", self.path, detail)
        now = time.time()
        event = AuditRecord(
            phase="event",
            timestamp=now,
            event_id=new_event_id(now),
            event_type=DISCONTINUITY_EVENT,
            detail=json.dumps(detail, separators=(",", ":")),
        )
        self._queue.append((event, None))

    def _drain_forever(self, conn: sqlite3.Connection) -> None:
        while True:
            probe = False
            with self._cond:
                while not self._queue and not self._closing:
                    if self._healthy:
                        self._cond.wait()
                    elif not self._cond.wait(self._probe_seconds):
                        probe = True  # unhealthy and idle: find out whether the store can write again
                        break
                if not self._queue and not probe:
                    return  # closing, and everything queued has been written
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            try:
                if batch:
                    self._write(conn, batch)
                else:
                    self._probe(conn)
            except Exception:  # a bug, not an I/O error: fail this batch, keep the writer alive
                logger.exception("audit writer failed unexpectedly")
                self._unhealthy()
                self._fail(batch, "the audit writer failed")

    def _unhealthy(self) -> None:
        self._healthy = False
        if self._outage is None:
            self._outage = (time.time(), self._failed_batches, self.stats.lost)

    def _probe(self, conn: sqlite3.Connection) -> None:
        # The probe is a real append, so it tests what a tool call's intent needs (a new row, fsynced), and
        # what it writes tells the auditor how long the log could not be written and what was lost.
        assert self._outage is not None
        since, failed, lost = self._outage
        now = time.time()
        detail = {
            "unavailable_since": format_timestamp(since),
            "failed_batches": self._failed_batches - failed,
            "records_lost": self.stats.lost - lost,
        }
        event = AuditRecord(
            phase="event",
            timestamp=now,
            event_id=new_event_id(now),
            event_type=RECOVERED_EVENT,
            detail=json.dumps(detail, separators=(",", ":")),
        )
        lost_before = self._lost_in_batches
        self._write(conn, [(event, None)])
        self._lost_in_batches = lost_before  # a failed probe lost nothing anyone asked to write

    def _write(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        settlements: list[_Settlement] = [(w, None) for r, w in batch if r is None and w is not None]
        pending = [(r, w) for r, w in batch if r is not None]
        if not pending:
            self._settle(settlements)
            return
        rows: list[tuple[object, ...]] = []
        written: list[_Waiter | None] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            seq, prev = self._head
            tail = read_tail(conn)
            if tail is not None and tail[0] > seq:  # another process appended to the same file
                seq, prev = tail
            for record, waiter in pending:
                try:
                    sealed, digest = _seal(record, prev)
                except (TypeError, ValueError) as exc:
                    self._rejected += 1
                    logger.error("audit record rejected: %s", exc)
                    if waiter is not None:
                        settlements.append((waiter, AuditUnavailable(f"audit record rejected: {exc}")))
                    continue
                seq += 1
                rows.append((seq, *record_values(sealed), prev, digest))
                written.append(waiter)
                prev = digest
            if rows:
                conn.executemany(INSERT_SQL, rows)
                write_head(conn, seq, prev)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("audit rollback failed")
            # The in-memory head did not move, so the next batch chains from the last durable row.
            self._unhealthy()
            self._failed_batches += 1
            logger.error("audit batch of %d records not written: %s", len(pending), exc)
            self._fail(pending, f"the audit store cannot write: {exc}")
            self._settle(settlements)
            return
        self._head = (seq, prev)
        self._healthy = True
        self._outage = None
        if rows:
            self._commits += 1
            self._appended += len(rows)
            self._largest_batch = max(self._largest_batch, len(rows))
        settlements.extend((w, None) for w in written if w is not None)
        self._settle(settlements)

    def _fail(self, items: Sequence[_Item], message: str) -> None:
        settlements: list[_Settlement] = []
        for record, waiter in items:
            if waiter is None:
                self._lost_in_batches += 1
            else:
                # A barrier completes either way; a record's waiter learns it was not written.
                settlements.append((waiter, None if record is None else AuditUnavailable(message)))
        self._settle(settlements)

    @staticmethod
    def _settle(settlements: list[_Settlement]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
        for item in settlements:
            by_loop.setdefault(item[0].get_loop(), []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
                loop.call_soon_threadsafe(_settle, items)  # one wake-up per loop per batch


def _seal(record: AuditRecord, prev_hash: str) -> tuple[AuditRecord, str]:
    try:
        canonical = canonical_record_bytes(record, prev_hash)
    except UnicodeEncodeError:
        record = storable(record)
        canonical = canonical_record_bytes(record, prev_hash)
    return record, hashlib.sha256(canonical).hexdigest()
