"""The event-loop side every group-committing audit sink shares: queueing records, waiting, counting.

A sink queues records here and its writer (a thread for SQLite, a task for PostgreSQL) takes them in
groups. `append` is the fail-closed path (durable before it returns, else `AuditUnavailable`);
`append_nowait` queues outcome and event records, counting what it cannot queue as lost. Subclasses set
the attributes declared below in their `__init__` and implement `_wake`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from mcp_gateway.audit.handoff import Waiter
from mcp_gateway.audit.pacing import CommitPacer
from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.store import AuditSinkStats
from mcp_gateway.errors import AuditUnavailable

logger = logging.getLogger(__name__)

# A queued record (None: a flush marker) and who waits for it (None: nobody, append_nowait).
Item = tuple[AuditRecord | None, Waiter | None]


class QueuedSink:
    """`append`, `append_nowait`, `flush` and the counters, over a queue a writer drains in groups."""

    _queue: deque[Item]
    _max_queue: int
    _accepting: bool
    _healthy: bool
    _head: tuple[int, str]
    _appended: int
    _commits: int
    _failed_batches: int
    _rejected: int
    _lost_in_batches: int
    _largest_batch: int
    _pacer: CommitPacer
    _dropped: int  # written by the event loop only
    _queue_full: int  # written by the event loop only

    async def append(self, record: AuditRecord) -> None:
        """Return once `record` is committed; raise AuditUnavailable if it cannot be."""
        if not self._accepting:
            raise AuditUnavailable("the audit store is not running")
        if len(self._queue) >= self._max_queue:
            self._queue_full += 1  # fail closed rather than grow memory behind a stalled store
            raise AuditUnavailable("the audit queue is full")
        waiter: Waiter = asyncio.get_running_loop().create_future()
        self._queue.append((record, waiter))
        self._wake()
        self._enqueued()
        await waiter

    def append_nowait(self, record: AuditRecord) -> None:
        """Queue `record` to be written with the next group; a record that cannot be is counted as lost."""
        if self._accepting and len(self._queue) < self._max_queue:
            self._queue.append((record, None))
            if not self._healthy:
                self._wake()  # in an outage, every record is a write attempt that tells /readyz the truth
            return
        self._dropped += 1
        dropped = self._dropped
        if dropped & (dropped - 1) == 0:  # log the 1st, 2nd, 4th, 8th ... loss, not every one
            logger.error("audit record dropped (%d so far): the audit store is full or not running", dropped)

    async def flush(self) -> None:
        """Wait until everything queued before this call has been written (or has failed)."""
        if not self._accepting:
            return
        waiter: Waiter = asyncio.get_running_loop().create_future()
        self._queue.append((None, waiter))
        self._wake()
        await waiter

    @property
    def healthy(self) -> bool:
        """False until started, after close, and while the last write attempt failed."""
        return self._accepting and self._healthy

    @property
    def head(self) -> tuple[int, str]:
        """The last committed (seq, hash) of this writer's chain: what to anchor elsewhere."""
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

    def _take(self, limit: int) -> list[Item]:
        """The writer's next group: up to `limit` queued items, oldest first (only the writer pops, so at
        least len() items are there; more may arrive meanwhile)."""
        popleft = self._queue.popleft
        batch = [popleft() for _ in range(min(limit, len(self._queue)))]
        self._pacer.taken(record for record, _ in batch)
        return batch

    def _wake(self) -> None:
        """Make the writer take the queue now (it may be waiting for company)."""
        raise NotImplementedError

    def _enqueued(self) -> None:
        """Called after `append` queued a record and woke the writer, before waiting for it."""
        return None
