"""PostgresAuditSink: each writer's own hash chain in a shared PostgreSQL log, group-committed by one task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from mcp_gateway.audit.events import discontinuity_event, recovered_event
from mcp_gateway.audit.handoff import Waiter
from mcp_gateway.audit.pacing import CommitPacer
from mcp_gateway.audit.postgres.appender import append_group, new_chain_id, open_chain, seal_group
from mcp_gateway.audit.postgres.schema import connect, display_url
from mcp_gateway.audit.queueing import Item, QueuedSink
from mcp_gateway.audit.record import GENESIS_HASH, AuditRecord
from mcp_gateway.audit.store import SchemaError
from mcp_gateway.errors import AuditUnavailable

logger = logging.getLogger(__name__)

# (record, waiter): a record without a waiter came from append_nowait; a waiter without a record is a flush().
_Item = Item
# What a store that is down, stuck, restarting or refusing looks like from here.
_STORE_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, SchemaError)


class PostgresAuditSink(QueuedSink):
    """An `AuditSink` over a PostgreSQL database shared by every gateway process.

    The sink appends to a chain of its own (`chain_id`, random per start, registered in `audit_chains`), so
    writers in other processes never wait for one another. One task on the event loop takes everything
    queued (up to `max_batch`), seals it onto the chain and writes it with one statement that also moves the
    chain's head checkpoint; its commit (synchronous_commit on) makes the whole group durable, and then every
    waiter wakes. While other calls are in flight, a group is held for company as in the SQLite sink
    (`pacing.CommitPacer`).

    Nothing here blocks the event loop: the driver is asynchronous, connecting is bounded by
    `connect_timeout_seconds` and every statement by `statement_timeout_seconds` (on the server and on the
    client, so a server that accepts and never answers fails the same way), and the queue is bounded. When
    the store fails, the connection is dropped, waiters get AuditUnavailable, and the next group (or, when
    idle, a probe every `retry_seconds`) reconnects, re-reads the chain's end and writes an
    `audit_store_recovered` event. Failed connects are retried at most once per `retry_seconds`; meanwhile
    appends fail at once rather than queue behind a dead store.
    """

    def __init__(
        self,
        url: str,
        *,
        chain_id: str | None = None,
        max_queue: int = 10_000,
        max_batch: int = 1_000,
        nowait_delay_seconds: float = 0.05,
        commit_interval_seconds: float = 0.001,
        connect_timeout_seconds: float = 5.0,
        statement_timeout_seconds: float = 5.0,
        retry_seconds: float = 1.0,
    ) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        if min(nowait_delay_seconds, connect_timeout_seconds, statement_timeout_seconds, retry_seconds) <= 0:
            raise ValueError("delays, timeouts and retry_seconds must be positive")
        self.url = url
        self.chain_id = chain_id or new_chain_id()
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._nowait_delay = nowait_delay_seconds
        self._connect_timeout = connect_timeout_seconds
        self._statement_timeout = statement_timeout_seconds
        self._retry = retry_seconds
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._urgent = self._accepting = self._closing = self._started = self._healthy = False
        self._conn: Any = None
        self._last_connect_failure = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._head: tuple[int, str] = (0, GENESIS_HASH)
        self._pacer = CommitPacer(commit_interval_seconds)
        self._appended = self._commits = self._failed_batches = self._rejected = 0
        self._lost_in_batches = self._largest_batch = self._dropped = self._queue_full = 0
        # (when, failed batches, lost records) at the first failure since the last good write:
        self._outage: tuple[float, int, int] | None = None

    # -- the AuditSink protocol ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the schema if missing, register this writer's chain; AuditUnavailable if it can't."""
        if self._started:
            raise RuntimeError("PostgresAuditSink.start() called twice")
        self._started = True
        try:
            await self._connect()
        except _STORE_ERRORS as exc:
            raise AuditUnavailable(f"cannot open the audit store {display_url(self.url)}: {exc}") from exc
        self._accepting = self._healthy = True
        self._task = asyncio.get_running_loop().create_task(self._drain_forever(), name=f"audit-writer:{self.chain_id}")

    async def aclose(self) -> None:
        """Write what is queued, then close the connection. Later appends raise AuditUnavailable."""
        if not self._started:
            return
        self._accepting = False
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._fail(list(self._drain_queue()), "the audit writer stopped")
        await self._disconnect()

    @property
    def backend_pid(self) -> int | None:
        """The server process serving this writer (pg_stat_activity.pid); None while disconnected."""
        return None if self._conn is None or self._conn.is_closed() else int(self._conn.get_server_pid())

    # -- the writer task ----------------------------------------------------------------------

    def _wake(self) -> None:
        self._urgent = True
        self._wakeup.set()

    def _drain_queue(self) -> list[_Item]:
        items = list(self._queue)
        self._queue.clear()
        return items

    async def _connect(self) -> None:
        try:
            conn = await connect(self.url, timeout=self._connect_timeout, statement_timeout=self._statement_timeout)
        except BaseException:
            self._last_connect_failure = time.monotonic()
            raise
        try:
            async with asyncio.timeout(self._statement_timeout * 4):
                head, discontinuity = await open_chain(conn, self.chain_id)
        except BaseException:
            self._last_connect_failure = time.monotonic()
            conn.terminate()
            raise
        self._conn, self._head = conn, head
        if discontinuity is not None:
            logger.error(
                "audit chain %s: its last row disagrees with its head checkpoint: %s", self.chain_id, discontinuity
            )
            self._queue.appendleft((discontinuity_event(discontinuity, time.time()), None))

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_STORE_ERRORS):
                async with asyncio.timeout(self._connect_timeout):
                    await conn.close()
            if not conn.is_closed():
                conn.terminate()

    async def _drain_forever(self) -> None:
        last_attempt = time.monotonic()
        while True:
            if not (self._urgent or self._closing):
                # Park until someone waits for a write; wake anyway after `nowait_delay` so that records
                # nobody waits for (outcomes) are never held longer than that.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._nowait_delay):
                        await self._wakeup.wait()
            self._wakeup.clear()
            self._urgent = False
            batch = self._take(self._max_batch)
            if await self._hold_for_company(batch, last_attempt):
                batch += self._take(self._max_batch - len(batch))
            if self._queue:
                self._urgent = True
            try:
                if batch:
                    last_attempt = time.monotonic()
                    await self._write(batch)
                elif self._closing:
                    return
                elif not self._healthy and time.monotonic() - last_attempt >= self._retry:
                    last_attempt = time.monotonic()
                    await self._probe()
            except Exception:  # a bug, not a store failure: fail this batch, keep the writer alive
                logger.exception("audit writer failed unexpectedly")
                self._unhealthy()
                self._fail(batch, "the audit writer failed")

    async def _hold_for_company(self, batch: list[_Item], last_attempt: float) -> bool:
        if not self._healthy or self._closing or len(batch) >= self._max_batch:
            return False
        someone_waits = any(waiter is not None for _, waiter in batch)
        hold = self._pacer.hold(someone_waits=someone_waits, last_commit_started=last_attempt, now=time.monotonic())
        if hold > 0:
            await asyncio.sleep(hold)
        return hold > 0

    def _unhealthy(self) -> None:
        self._healthy = False
        if self._outage is None:
            self._outage = (time.time(), self._failed_batches, self.stats.lost)

    async def _probe(self) -> None:
        # Unhealthy and idle: a gateway that /readyz reports as not ready gets no traffic, so without a probe
        # it could never become ready again. The probe is a real append (the recovered event).
        lost_before = self._lost_in_batches
        await self._write_records([])
        self._lost_in_batches = lost_before  # a failed probe lost nothing anyone asked to write

    async def _write(self, batch: list[_Item]) -> None:
        barriers = [waiter for record, waiter in batch if record is None and waiter is not None]
        pending = [(record, waiter) for record, waiter in batch if record is not None]
        if pending:
            await self._write_records(pending)
        for waiter in barriers:  # everything queued before them is settled by now
            if not waiter.done():
                waiter.set_result(None)

    async def _write_records(self, pending: list[tuple[AuditRecord, Waiter | None]]) -> None:
        if self._conn is not None and self._conn.is_closed():
            # Dropped while idle (a server restart, pg_terminate_backend): nothing was in flight, so this
            # group can go over a new connection as if nothing happened.
            logger.warning("audit store connection was closed by the server; reconnecting")
            self._conn = None
        if self._conn is None:
            if time.monotonic() - self._last_connect_failure < self._retry:
                self._failed(pending, "the audit store is unreachable; retrying")
                return
            try:
                await self._connect()
            except _STORE_ERRORS as exc:
                self._failed(pending, f"cannot reach the audit store: {str(exc) or type(exc).__name__}")
                return
        if self._outage is not None:
            since, failed, lost = self._outage
            event = recovered_event(
                unavailable_since=since,
                failed_batches=self._failed_batches - failed,
                records_lost=self.stats.lost - lost,
                now=time.time(),
            )
            requested, pending = pending, [(event, None), *pending]
        else:
            requested = pending
        head, columns, written, rejected = seal_group(pending, self._head)
        if written:
            try:
                # A hard bound of our own: the driver's timeout then waits as long again for the server to
                # acknowledge cancelling the statement, which a stuck server never does.
                async with asyncio.timeout(self._statement_timeout):
                    await append_group(self._conn, self.chain_id, columns, head, self._statement_timeout * 2)
            except _STORE_ERRORS as exc:
                # Whether the group was committed is unknown (a timeout, a lost connection): reconnecting
                # re-reads the chain's end, so the next group chains on from whatever is durable. Aborted, not
                # closed: a polite goodbye to a stuck server would wait for an answer that never comes.
                self._conn.terminate()
                self._conn = None
                self._failed(requested, f"the audit store cannot write: {str(exc) or type(exc).__name__}")
                return
        for waiter, error in rejected:
            self._rejected += 1
            logger.error("audit record rejected: %s", error)
            if waiter is not None and not waiter.done():
                waiter.set_exception(AuditUnavailable(f"audit record rejected: {error}"))
        self._head = head
        self._healthy = True
        self._outage = None
        self._pacer.committed((record for record, _ in written), time.monotonic())
        if written:
            self._commits += 1
            self._appended += len(written)
            self._largest_batch = max(self._largest_batch, len(written))
        for _, waiter in written:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _failed(self, pending: list[tuple[AuditRecord, Waiter | None]], message: str) -> None:
        self._unhealthy()
        self._failed_batches += 1
        logger.error("audit batch of %d records not written: %s", len(pending), message)
        self._fail(pending, message)

    def _fail(self, items: Sequence[_Item], message: str) -> None:
        for record, waiter in items:
            if waiter is None:
                self._lost_in_batches += 1
            elif not waiter.done():
                # A barrier completes either way; a record's waiter learns it was not written.
                if record is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(AuditUnavailable(message))
