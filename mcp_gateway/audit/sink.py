"""Audit sinks that need no store: in memory and always failing (tests), and none at all (benchmarks).

`AuditSink`, the protocol every sink follows, lives in `store.py`; it is re-exported here for the modules
that import it from its first home.
"""

from __future__ import annotations

from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.store import AuditSink, AuditSinkStats
from mcp_gateway.errors import AuditUnavailable

__all__ = ["AuditSink", "FailingAuditSink", "MemoryAuditSink", "NullAuditSink"]


class MemoryAuditSink:
    """Keeps records in a list: for tests of the code that produces records.

    Set `failing = True` to make it behave like an unwritable store from then on.
    """

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.failing = False
        self.lost = 0
        self._open = False

    async def start(self) -> None:
        self._open = True

    async def append(self, record: AuditRecord) -> None:
        if self.failing or not self._open:
            raise AuditUnavailable("audit store unavailable")
        self.records.append(record)

    def append_nowait(self, record: AuditRecord) -> None:
        if self.failing or not self._open:
            self.lost += 1
            return
        self.records.append(record)

    async def aclose(self) -> None:
        self._open = False

    @property
    def healthy(self) -> bool:
        return self._open and not self.failing

    @property
    def stats(self) -> AuditSinkStats:
        """Each kept record counts as appended (and committed alone); refused `append_nowait` ones as lost."""
        return AuditSinkStats(appended=len(self.records), commits=len(self.records), lost=self.lost)


class FailingAuditSink:
    """An audit store that can never write: every `append` raises `AuditUnavailable`."""

    def __init__(self, message: str = "audit store unavailable") -> None:
        self.message = message
        self.attempts = 0
        self.lost = 0

    async def start(self) -> None:
        return None

    async def append(self, record: AuditRecord) -> None:
        self.attempts += 1
        raise AuditUnavailable(self.message)

    def append_nowait(self, record: AuditRecord) -> None:
        self.lost += 1

    async def aclose(self) -> None:
        return None

    @property
    def healthy(self) -> bool:
        return False

    @property
    def stats(self) -> AuditSinkStats:
        return AuditSinkStats(failed_batches=self.attempts, lost=self.lost)


class NullAuditSink:
    """Writes nothing: `[audit] enabled = false`, for benchmarks' audit-off baseline only."""

    async def start(self) -> None:
        return None

    async def append(self, record: AuditRecord) -> None:
        return None

    def append_nowait(self, record: AuditRecord) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def healthy(self) -> bool:
        return True

    @property
    def stats(self) -> AuditSinkStats:
        return AuditSinkStats()
