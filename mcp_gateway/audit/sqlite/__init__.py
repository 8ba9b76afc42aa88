"""The SQLite audit store (the embedded default, `[audit] database`): the only code that knows SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mcp_gateway.audit.sqlite.reader import SQLiteAuditReader
from mcp_gateway.audit.sqlite.sink import SQLiteAuditSink
from mcp_gateway.audit.store import AuditLocation, AuditStore

if TYPE_CHECKING:
    from mcp_gateway.config import AuditConfig

__all__ = ["STORE", "SQLiteAuditReader", "SQLiteAuditSink", "SQLiteStore"]


class SQLiteStore:
    """An `AuditStore` over one file: `location.target` is its resolved path."""

    def open_sink(self, location: AuditLocation, settings: AuditConfig) -> SQLiteAuditSink:
        return SQLiteAuditSink(Path(location.target), synchronous=settings.synchronous)

    def open_reader(self, location: AuditLocation) -> SQLiteAuditReader:
        path = Path(location.target)
        if not path.is_file():  # before the caller writes anything (`audit export --output FILE`)
            raise FileNotFoundError(f"no audit database at {path}")
        return SQLiteAuditReader(path)


STORE: AuditStore = SQLiteStore()
