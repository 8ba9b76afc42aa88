"""SQLiteAuditSink: hash-chained records made durable by one writer thread with group commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from mcp_gateway.audit.events import discontinuity_event, recovered_event
from mcp_gateway.audit.handoff import Settlement, settle_from_thread
from mcp_gateway.audit.handoff import Waiter as _Waiter
from mcp_gateway.audit.pacing import CommitPacer
from mcp_gateway.audit.queueing import Item, QueuedSink
from mcp_gateway.audit.record import GENESIS_HASH, AuditRecord
from mcp_gateway.audit.sqlite.appender import (
    SYNCHRONOUS,
    chain_position,
    commit_group,
    last_row,
    open_for_appending,
    rollback,
)
from mcp_gateway.audit.store import SchemaError
from mcp_gateway.errors import AuditUnavailable

logger = logging.getLogger(__name__)

# (record, waiter): a record without a waiter came from append_nowait; a waiter without a record is
# a flush() barrier.
_Item = Item
_LOCK_ERRORS: Final = frozenset((sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))


class SQLiteAuditSink(QueuedSink):
    """An `AuditSink` over a SQLite file in WAL mode (synchronous=FULL unless told otherwise).

    Every record is written by one thread: it takes everything queued (up to `max_batch`), seals it onto
    the chain and inserts it as one transaction (one INSERT statement per 128 rows) whose single commit
    makes the whole group durable, then wakes every waiter with one call into their event loop. Each row
    is the record's canonical JSON (with `prev_hash` inside) and its `hash` (see `record.chain_hash`), and
    the meta table's head checkpoint moves in the same transaction, so `audit verify` can tell a
    truncated tail.

    The event loop's share of an append is a deque append, and a wake-up only if the writer is parked.
    Hashing, encoding and SQLite all run in the writer thread.

    Waiters are asyncio futures: use it from asyncio (uvicorn, anyio's asyncio backend).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        max_queue: int = 10_000,
        max_batch: int = 1_000,
        nowait_delay_seconds: float = 0.05,
        commit_interval_seconds: float = 0.001,
        busy_timeout_ms: int = 5_000,
        recovery_probe_seconds: float = 5.0,
        on_open: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """`synchronous` is SQLite's: "full" fsyncs the WAL at every commit, so an acknowledged record
        survives power loss; "normal" leaves the WAL to the OS between checkpoints, so it survives a
        crashed or killed process but not power loss. Either way `append` returns after the commit.

        Records from `append_nowait` (outcomes, events) do not wake the writer: they go with the next
        group that someone waits for, or within `nowait_delay_seconds` if nobody does (and at close).

        While other calls are in flight, a group is held until `commit_interval_seconds` after the
        previous commit started (longer with many in flight: see `pacing.CommitPacer`), so that under load
        one commit (one fsync) serves several calls; a call made while no other is in flight is never held.

        `on_open` runs in the writer thread once the schema is ready: a seam for tests, e.g.
        `PRAGMA max_page_count` to make the file "full", `PRAGMA query_only` to make it read-only.

        After a failed write, the writer tries again every `recovery_probe_seconds` while nothing else
        is queued, by writing an `audit_store_recovered` event: a gateway that /readyz reports as not
        ready gets no traffic, so without the probe it could never become ready again.
        """
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        if not recovery_probe_seconds > 0 or not nowait_delay_seconds > 0 or commit_interval_seconds < 0:
            raise ValueError(
                "recovery_probe_seconds and nowait_delay_seconds must be positive, commit_interval_seconds >= 0"
            )
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}, not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._nowait_delay = nowait_delay_seconds
        self._busy_timeout_ms = busy_timeout_ms
        self._on_open = on_open
        self._probe_seconds = recovery_probe_seconds
        # The hand-off between the event loop and the writer takes no lock: under the GIL a deque's
        # append and popleft are atomic, and the flags below are plain stores. An appender that needs
        # the writer sets `_urgent` and then, only if the writer is parked (`_idle`), puts one token in
        # `_wakeup`. The writer sets `_idle` before it reads `_urgent`, so one of the two always sees
        # the other's store: no wake-up is lost, and a busy writer costs an appender no system call.
        self._queue: deque[_Item] = deque()
        self._wakeup: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._urgent = False
        self._idle = False
        self._accepting = False
        self._closing = False
        self._started = False
        self._healthy = False
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer_gone = False
        self._head: tuple[int, str] = (0, GENESIS_HASH)
        # Written by the writer thread only:
        self._pacer = CommitPacer(commit_interval_seconds)
        self._appended = self._commits = self._failed_batches = self._rejected = 0
        self._lost_in_batches = self._largest_batch = 0
        # (when, failed batches, lost records) at the first failure since the last good write:
        self._outage: tuple[float, int, int] | None = None
        # Written by the appending (event loop) thread only:
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

    async def aclose(self) -> None:
        """Write what is queued, then close the database. Later appends raise AuditUnavailable."""
        if not self._started:
            return
        self._accepting = False
        self._closing = True
        self._wakeup.put(None)
        await asyncio.wrap_future(self._stopped)

    def _wake(self) -> None:
        self._urgent = True
        if self._idle:
            self._idle = False  # one token per parking, however many appenders find it parked
            self._wakeup.put(None)

    def _enqueued(self) -> None:
        if self._writer_gone:  # the writer died between the accepting check and the append: nobody will write it
            self._fail_leftovers()

    # -- the writer thread --------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        if hasattr(os, "SCHED_BATCH"):
            # Linux: a woken writer does not preempt the event loop; it runs when the loop waits or its time
            # slice ends, with the same share of the CPU. On the gateway's one core that saves a context switch
            # or two per group (and the GIL hand-offs they cause), and lets more records gather meanwhile.
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        try:
            conn = self._open()
        except BaseException as exc:
            ready.set_exception(exc)
            self._stopped.set_result(None)
            return
        self._accepting = self._healthy = True
        ready.set_result(None)
        try:
            self._drain_forever(conn)
        finally:
            self._accepting = False
            self._writer_gone = True
            self._fail_leftovers()
            conn.close()
            self._stopped.set_result(None)

    def _fail_leftovers(self) -> None:
        # Safe from either thread: each item is popped, and so failed, exactly once.
        leftover: list[_Item] = []
        with contextlib.suppress(IndexError):
            while True:
                leftover.append(self._queue.popleft())
        self._fail(leftover, "the audit writer stopped")

    def _open(self) -> sqlite3.Connection:
        conn = open_for_appending(self.path, synchronous=self.synchronous, busy_timeout_ms=self._busy_timeout_ms)
        try:
            self._head, discontinuity = chain_position(conn)
            if discontinuity is not None:
                # Say so in the log itself, not only in the gateway's own log.
                logger.error(
                    "audit database %s: the last row disagrees with the head checkpoint: %s", self.path, discontinuity
                )
                self._queue.append((discontinuity_event(discontinuity, time.time()), None))
            if self._on_open is not None:
                self._on_open(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _drain_forever(self, conn: sqlite3.Connection) -> None:
        last_attempt = time.monotonic()
        while True:
            self._idle = True  # before reading _urgent: see __init__
            if not (self._urgent or self._closing):
                # Park until someone waits for a write; wake anyway after `nowait_delay` so that records
                # nobody waits for (outcomes) are never held longer than that.
                with contextlib.suppress(queue.Empty):
                    self._wakeup.get(timeout=self._nowait_delay)
            self._idle = False
            self._urgent = False  # before taking the batch, so an append racing with it is not missed
            batch = self._take(self._max_batch)
            if self._hold_for_company(batch, last_attempt):
                batch += self._take(self._max_batch - len(batch))
            if self._queue:
                self._urgent = True  # more than one batch was queued, and waiters may be among the rest
            try:
                if batch:
                    last_attempt = time.monotonic()
                    self._write(conn, batch)
                elif self._closing:
                    return  # everything queued has been written
                elif not self._healthy and time.monotonic() - last_attempt >= self._probe_seconds:
                    last_attempt = time.monotonic()
                    self._probe(conn)  # unhealthy and idle: find out whether the store can write again
            except Exception:  # a bug, not an I/O error: fail this batch, keep the writer alive
                logger.exception("audit writer failed unexpectedly")
                self._unhealthy()
                self._fail(batch, "the audit writer failed")

    def _hold_for_company(self, batch: list[_Item], last_attempt: float) -> bool:
        if not self._healthy or self._closing or len(batch) >= self._max_batch:
            return False
        someone_waits = any(waiter is not None for _, waiter in batch)
        hold = self._pacer.hold(someone_waits=someone_waits, last_commit_started=last_attempt, now=time.monotonic())
        if hold > 0:
            time.sleep(hold)
        return hold > 0

    def _unhealthy(self) -> None:
        self._healthy = False
        if self._outage is None:
            self._outage = (time.time(), self._failed_batches, self.stats.lost)

    def _probe(self, conn: sqlite3.Connection) -> None:
        # The probe is a real append, so it tests what a tool call's intent needs (a new row, fsynced), and
        # what it writes tells the auditor how long the log could not be written and what was lost.
        assert self._outage is not None
        since, failed, lost = self._outage
        event = recovered_event(
            unavailable_since=since,
            failed_batches=self._failed_batches - failed,
            records_lost=self.stats.lost - lost,
            now=time.time(),
        )
        lost_before = self._lost_in_batches
        self._write(conn, [(event, None)])
        self._lost_in_batches = lost_before  # a failed probe lost nothing anyone asked to write

    def _write(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        settlements: list[Settlement] = [(w, None) for r, w in batch if r is None and w is not None]
        pending = [(r, w) for r, w in batch if r is not None]
        self._write_records(conn, pending, settlements)
        settle_from_thread(settlements)  # barriers last: everything queued before them is settled by now

    def _write_records(
        self,
        conn: sqlite3.Connection,
        pending: list[tuple[AuditRecord, _Waiter | None]],
        settlements: list[Settlement],
    ) -> None:
        if not pending:
            return
        try:
            try:
                head, written, rejected = commit_group(conn, pending, self._head)
            except sqlite3.IntegrityError:
                # The seq is taken: another process appended to this file since our last commit. No
                # SELECT per group to find that out; chain on from its last row instead.
                rollback(conn)
                tail = last_row(conn)
                if tail[0] <= self._head[0]:
                    raise
                head, written, rejected = commit_group(conn, pending, tail)
        except sqlite3.Error as exc:
            rollback(conn)
            # The in-memory head did not move, so the next batch chains from the last durable row.
            if len(pending) > 1 and getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _LOCK_ERRORS:
                # One record that cannot be written (too big for the space left, say) must not take the
                # others of its group with it: write each alone. Not after a lock timeout, which would
                # only make every record wait that long again.
                for item in pending:
                    self._write_records(conn, [item], settlements)
                return
            self._unhealthy()
            self._failed_batches += 1
            logger.error("audit batch of %d records not written: %s", len(pending), exc)
            self._fail(pending, f"the audit store cannot write: {exc}")
            return
        for waiter, error in rejected:
            self._rejected += 1
            logger.error("audit record rejected: %s", error)
            if waiter is not None:
                settlements.append((waiter, AuditUnavailable(f"audit record rejected: {error}")))
        self._head = head
        self._healthy = True
        self._outage = None
        self._pacer.committed((record for record, _ in written), time.monotonic())
        if written:
            self._commits += 1
            self._appended += len(written)
            self._largest_batch = max(self._largest_batch, len(written))
        settlements.extend((w, None) for _, w in written if w is not None)

    def _fail(self, items: Sequence[_Item], message: str) -> None:
        settlements: list[Settlement] = []
        for record, waiter in items:
            if waiter is None:
                self._lost_in_batches += 1
            else:
                # A barrier completes either way; a record's waiter learns it was not written.
                settlements.append((waiter, None if record is None else AuditUnavailable(message)))
        settle_from_thread(settlements)
