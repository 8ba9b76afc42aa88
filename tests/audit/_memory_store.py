"""A second kind of audit store for the factory's tests: the whole of what a new store adds is a module
like this one (exposing `STORE`) and one line in `mcp_gateway/audit/stores.py`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

from mcp_gateway.audit.query import ExportResult, QueryFilters, VerifyResult
from mcp_gateway.audit.record import GENESIS_HASH
from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.audit.store import AuditLocation, AuditStore
from mcp_gateway.config import AuditConfig


class EmptyReader:
    """The reader of a log that holds nothing."""

    def query(self, filters: QueryFilters | None = None) -> Iterator[dict[str, Any]]:
        yield from ()

    def export(self, out: TextIO, *, after_seq: int | None = None, after_event_id: str | None = None) -> ExportResult:
        return ExportResult(0, None)

    def verify(self) -> VerifyResult:
        return VerifyResult(True, 0, 0, GENESIS_HASH)


class MemoryStore:
    def open_sink(self, location: AuditLocation, settings: AuditConfig) -> MemoryAuditSink:
        return MemoryAuditSink()

    def open_reader(self, location: AuditLocation) -> EmptyReader:
        return EmptyReader()


STORE: AuditStore = MemoryStore()
