"""Reading a SQLite audit database: the merged-call query, chain verification and export, read-only."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TextIO

from mcp_gateway.audit.query import (
    ABORTED,
    FILTER_FIELDS,
    ExportResult,
    QueryFilters,
    VerifyResult,
    call_row,
    export_line,
    verify_chain,
)
from mcp_gateway.audit.sqlite.schema import SELECT_ROWS_SQL, TABLE, read_head, schema_version, uri_for
from mcp_gateway.audit.store import AuditReadError


def open_read_only(db_path: str | Path) -> sqlite3.Connection:
    """Open an existing audit database without ever creating or writing it."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no audit database at {path}")
    conn = sqlite3.connect(uri_for(path, read_only=True), uri=True, isolation_level=None, timeout=5.0)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        if schema_version(conn) is None:
            conn.close()
            raise FileNotFoundError(f"{path} has no audit records table (not an mcp-gateway audit database)")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    # SQLite's own errors stay inside this module: the CLI knows only AuditReadError.
    try:
        conn = open_read_only(path)
        try:
            yield conn
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise AuditReadError(str(exc)) from exc


def _merged_sql() -> str:
    # One row per call: the intent's record and the first outcome's; an intent whose outcome never arrived
    # (crash, kill, in flight) is "aborted". Outcomes without an intent and events stand alone. The filter
    # columns are read out of the JSON here; the output is parsed from the records themselves in Python,
    # because SQLite's JSON functions cut text short at an escaped NUL, and client-chosen text may hold one.
    def merged(name: str) -> str:
        if name == "outcome":
            return f"CASE WHEN o.seq IS NULL THEN '{ABORTED}' ELSE json_extract(o.record, '$.outcome') END"
        return f"COALESCE(json_extract(o.record, '$.{name}'), json_extract(i.record, '$.{name}'))"

    def alone(name: str) -> str:
        return f"json_extract(record, '$.{name}')"

    filters = [column for _, column in FILTER_FIELDS]
    return f"""
        SELECT i.seq AS seq, i.timestamp AS timestamp, i.record AS first, o.record AS second,
               {", ".join(f"{merged(c)} AS {c}" for c in filters)}
        FROM {TABLE} AS i
        LEFT JOIN {TABLE} AS o ON o.seq = (
            SELECT min(seq) FROM {TABLE} WHERE event_id = i.event_id AND phase = 'outcome')
        WHERE i.phase = 'intent'
        UNION ALL
        SELECT seq, timestamp, record, NULL, {", ".join(f"{alone(c)} AS {c}" for c in filters)} FROM {TABLE} AS o
        WHERE o.phase = 'outcome'
          AND NOT EXISTS (SELECT 1 FROM {TABLE} WHERE event_id = o.event_id AND phase = 'intent')
        UNION ALL
        SELECT seq, timestamp, record, NULL, {", ".join(f"{alone(c)} AS {c}" for c in filters)} FROM {TABLE}
        WHERE phase = 'event'
    """


_MERGED_SQL: Final = _merged_sql()


class SQLiteAuditReader:
    """An `AuditReader` over a SQLite audit file; every call opens it read-only and closes it again."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def query(self, filters: QueryFilters | None = None) -> Iterator[dict[str, Any]]:
        filters = filters or QueryFilters()
        where: list[str] = []
        params: list[Any] = []
        for attribute, column in FILTER_FIELDS:
            value = getattr(filters, attribute)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if filters.since is not None:
            where.append("timestamp >= ?")
            params.append(filters.since)
        if filters.until is not None:
            where.append("timestamp < ?")
            params.append(filters.until)
        sql = f"SELECT first, second FROM ({_MERGED_SQL})" + (" WHERE " + " AND ".join(where) if where else "")
        with _reading(self.path) as conn:
            if filters.limit is not None:
                # The most recent N, still printed oldest first so the output reads like a log.
                sql += " ORDER BY timestamp DESC, seq DESC LIMIT ?"
                rows = conn.execute(sql, [*params, max(0, filters.limit)]).fetchall()
                rows.reverse()
                yield from (call_row(*row) for row in rows)
            else:
                sql += " ORDER BY timestamp, seq"
                yield from (call_row(*row) for row in conn.execute(sql, params))

    def verify(self) -> VerifyResult:
        """A rewrite of every row *and* the checkpoint is only caught by comparing `head_hash` with a copy
        kept elsewhere."""
        with _reading(self.path) as conn:
            conn.execute("BEGIN")  # one snapshot, even while the gateway keeps appending
            return verify_chain(conn.execute(SELECT_ROWS_SQL + " ORDER BY seq"), lambda: read_head(conn))

    def export(self, out: TextIO, *, after_seq: int | None = None, after_event_id: str | None = None) -> ExportResult:
        """Resume with `after_seq=result.last_seq`. `after_event_id` resumes after that call's *first*
        record, so a call's later outcome is never skipped."""
        with _reading(self.path) as conn:
            start = after_seq or 0
            if after_event_id is not None:
                row = conn.execute(f"SELECT min(seq) FROM {TABLE} WHERE event_id = ?", (after_event_id,)).fetchone()
                if row is None or row[0] is None:
                    raise LookupError(f"no audit record has event_id {after_event_id!r}")
                start = max(start, int(row[0]))
            count, last = 0, None
            for seq, _, _, _, text, hash_ in conn.execute(SELECT_ROWS_SQL + " WHERE seq > ? ORDER BY seq", (start,)):
                out.write(export_line(seq, text, hash_))
                out.write("\n")
                count, last = count + 1, int(seq)
            return ExportResult(count, last)
