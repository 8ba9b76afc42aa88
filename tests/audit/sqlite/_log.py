"""Reading a SQLite audit file by its path, as the tests of the SQLite store do throughout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from mcp_gateway.audit.query import ExportResult, QueryFilters, VerifyResult
from mcp_gateway.audit.sqlite import SQLiteAuditReader


def query(path: Path, filters: QueryFilters | None = None) -> Iterator[dict[str, Any]]:
    return SQLiteAuditReader(path).query(filters)


def verify(path: Path) -> VerifyResult:
    return SQLiteAuditReader(path).verify()


def export(path: Path, out: TextIO, *, after_seq: int | None = None, after_event_id: str | None = None) -> ExportResult:
    return SQLiteAuditReader(path).export(out, after_seq=after_seq, after_event_id=after_event_id)
