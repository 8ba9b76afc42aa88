"""The audit sink seam: where records go, and the durability promise each method makes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.errors import AuditUnavailable


@runtime_checkable
class AuditSink(Protocol):
    """Where audit records are made durable.

    `append` is the fail-closed path for intent records: it returns only once the record is durable
    and raises `AuditUnavailable` otherwise, so the caller forwards nothing. `append_nowait` is for
    outcome and event records the caller must not wait for: they become durable soon after, and a
    failure to write them is counted rather than raised.
    """

    async def start(self) -> None: ...

    async def append(self, record: AuditRecord) -> None: ...

    def append_nowait(self, record: AuditRecord) -> None: ...

    async def aclose(self) -> None: ...

    @property
    def healthy(self) -> bool: ...


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
