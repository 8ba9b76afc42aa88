"""The audit database's SQLite schema, and how a record maps to a row and back."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Final

from mcp_gateway.audit.chain import parse_record
from mcp_gateway.audit.record import RECORD_FIELDS
from mcp_gateway.audit.store import SchemaError

__all__ = [
    "FIELDS_VIEW",
    "ROW_COLUMNS",
    "SCHEMA_DDL",
    "SCHEMA_VERSION",
    "SELECT_ROWS_SQL",
    "TABLE",
    "SchemaError",
    "insert_rows_sql",
    "parse_record",
    "read_head",
    "read_tail",
    "schema_version",
    "uri_for",
    "write_head",
]

SCHEMA_VERSION: Final = 2
TABLE: Final = "audit_records"
FIELDS_VIEW: Final = "audit_fields"

# A row is the record's canonical JSON (RFC 8785, with "prev_hash" inside: exactly the bytes its hash
# covers) plus the few columns lookups need: event_id (joining a call's intent and outcome, resuming an
# export), phase, timestamp (time windows). Every other field is read out of the JSON when queried, so
# writing a record costs one short row and two index entries, not ~30 columns. The plain columns repeat
# what the JSON says; `audit verify` checks that they agree.
# Version 1 (one column per field) was written by development builds only; its files are refused.
ROW_COLUMNS: Final[tuple[str, ...]] = ("seq", "event_id", "phase", "timestamp", "record", "hash")
# Every record field as a column, for auditors using the sqlite3 shell. SQLite's JSON functions stop at an
# escaped NUL (client-chosen text may hold one), so `audit query` and `audit export` parse the JSON themselves.
_FIELD_COLUMNS: Final = ",\n    ".join(
    name if name in ("event_id", "phase", "timestamp") else f"json_extract(record, '$.{name}') AS {name}"
    for name in RECORD_FIELDS
)
# Every statement is idempotent so that two processes racing to create the file both succeed.
SCHEMA_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    timestamp REAL NOT NULL,
    record TEXT NOT NULL,
    hash TEXT NOT NULL
)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_event_id ON {TABLE} (event_id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_timestamp ON {TABLE} (timestamp)",
    f"""CREATE VIEW IF NOT EXISTS {FIELDS_VIEW} AS SELECT seq,
    {_FIELD_COLUMNS},
    json_extract(record, '$.prev_hash') AS prev_hash,
    hash
FROM {TABLE}""",
)
SELECT_ROWS_SQL: Final = f"SELECT {', '.join(ROW_COLUMNS)} FROM {TABLE}"
_WRITE_HEAD_SQL: Final = (
    "INSERT INTO meta (key, value) VALUES ('head_seq', ?), ('head_hash', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


@functools.lru_cache(maxsize=64)
def insert_rows_sql(rows: int) -> str:
    """One INSERT statement for `rows` rows; its parameters are the rows' ROW_COLUMNS values, row after row."""
    one = "(" + ",".join("?" * len(ROW_COLUMNS)) + ")"
    return f"INSERT INTO {TABLE} ({', '.join(ROW_COLUMNS)}) VALUES " + ",".join([one] * rows)


def uri_for(path: Path, *, read_only: bool) -> str:
    """A `file:` URI for sqlite3.connect(uri=True); percent-encodes whatever the path contains."""
    return path.resolve().as_uri() + ("?mode=ro" if read_only else "?mode=rwc")


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version, or None if it has no audit schema yet."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if exists is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise SchemaError("the meta table has no schema_version; not an mcp-gateway audit database")
    try:
        version = int(row[0])
    except ValueError as exc:
        raise SchemaError(f"unreadable schema_version {row[0]!r}") from exc
    if version > SCHEMA_VERSION:
        raise SchemaError(f"schema version {version} is newer than this mcp-gateway understands ({SCHEMA_VERSION})")
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"schema version {version} was written by a development build of mcp-gateway; this one reads and "
            f"writes version {SCHEMA_VERSION}. Verify and archive the file with the build that wrote it, then move "
            "it aside: the gateway starts a new log"
        )
    return version


def read_head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """The head checkpoint (last committed seq and hash) from the meta table, or None if absent."""
    rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('head_seq', 'head_hash')").fetchall())
    if "head_seq" not in rows or "head_hash" not in rows:
        return None
    try:
        return int(rows["head_seq"]), str(rows["head_hash"])
    except ValueError:
        return None


def read_tail(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """The last row's seq and hash, or None for an empty table."""
    row = conn.execute(f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def write_head(conn: sqlite3.Connection, seq: int, hash_: str) -> None:
    """Move the head checkpoint; call inside the transaction that inserted the rows."""
    conn.execute(_WRITE_HEAD_SQL, (seq, hash_))
