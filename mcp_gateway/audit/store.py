"""The audit store seam: the writer (`AuditSink`), the reader (`AuditReader`), and the store that opens both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from mcp_gateway.audit.record import AuditRecord

if TYPE_CHECKING:
    from mcp_gateway.audit.query import ExportResult, QueryFilters, VerifyResult
    from mcp_gateway.config import AuditConfig


@dataclass(frozen=True)
class AuditSinkStats:
    """Counters for /metrics and for tests; read without locking, so approximately consistent."""

    appended: int = 0  # records committed
    commits: int = 0  # transactions committed; appended / commits is the mean group size
    failed_batches: int = 0  # transactions rolled back (disk full, read-only, I/O error, lock timeout)
    rejected: int = 0  # records refused before writing: a field of the wrong type or outside JSON
    lost: int = 0  # append_nowait records never written (queue full, failed batch, sink closed)
    queue_full: int = 0  # append calls refused because the queue was full
    queue_depth: int = 0
    largest_batch: int = 0


@dataclass(frozen=True)
class AuditLocation:
    """Where a store keeps its log: `scheme` picks the store ("sqlite" for `[audit] database`, else the
    scheme of `[audit] url`); `target` is the store's own address (a resolved file path, a URL)."""

    scheme: str
    target: str


class SchemaError(Exception):
    """The store holds no audit log this version understands (a newer or older schema, or none)."""


class AuditReadError(Exception):
    """The store cannot be read (corrupt file, refused connection); `audit verify` says more."""


@runtime_checkable
class AuditSink(Protocol):
    """Where audit records are made durable (the writer half of a store).

    `append` is the fail-closed path for intent records: it returns only once the record is durable
    and raises `AuditUnavailable` otherwise, so the caller forwards nothing. `append_nowait` is for
    outcome and event records the caller must not wait for: they become durable soon after, and a
    failure to write them is counted rather than raised. `stats` feeds /metrics.
    """

    async def start(self) -> None: ...

    async def append(self, record: AuditRecord) -> None: ...

    def append_nowait(self, record: AuditRecord) -> None: ...

    async def aclose(self) -> None: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def stats(self) -> AuditSinkStats: ...


@runtime_checkable
class AuditReader(Protocol):
    """The auditor's view of a store: what `audit query`, `audit export` and `audit verify` print.

    Each call reads one consistent view and releases it before returning (or, for `query`, when the
    iteration ends). A missing log raises FileNotFoundError, an unknown schema SchemaError, an unreadable
    store AuditReadError, a record that no longer parses ValueError.
    """

    def query(self, filters: QueryFilters | None = None) -> Iterator[dict[str, Any]]:
        """One dict per call (intent and outcome merged) or event, oldest first, keys in OUTPUT_FIELDS order."""
        ...

    def export(self, out: TextIO, *, after_seq: int | None = None, after_event_id: str | None = None) -> ExportResult:
        """Every record after a cursor as one JSON line (at-least-once; `seq` is the key to deduplicate on)."""
        ...

    def verify(self) -> VerifyResult:
        """Walk every chain link and compare the tail with the head checkpoint; the first break wins."""
        ...


@runtime_checkable
class AuditStore(Protocol):
    """One kind of store (SQLite, ...): opens the writer and the reader over a location.

    A store's module exposes one as `STORE`; `stores.py` maps a scheme to that module.
    """

    def open_sink(self, location: AuditLocation, settings: AuditConfig) -> AuditSink:
        """The writer, not started yet: the gateway calls `start()` in its lifespan."""
        ...

    def open_reader(self, location: AuditLocation) -> AuditReader:
        """A reader that never creates or writes the log."""
        ...
