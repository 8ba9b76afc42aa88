"""The audit database's SQLite schema, and how a record maps to a row and back."""

from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path
from typing import Final

from mcp_gateway.audit.record import FIELD_KINDS, RECORD_FIELDS, AuditRecord

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
_LIST_FIELDS: Final = frozenset(name for name, kind in FIELD_KINDS if kind == "list")
_FLOAT_FIELDS: Final = frozenset(name for name, kind in FIELD_KINDS if kind in ("float", "float?"))
_FIELD_NAMES: Final = frozenset(RECORD_FIELDS)
_WRITE_HEAD_SQL: Final = (
    "INSERT INTO meta (key, value) VALUES ('head_seq', ?), ('head_hash', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class SchemaError(Exception):
    """The file is not an audit database this version understands."""


@functools.lru_cache(maxsize=64)
def insert_rows_sql(rows: int) -> str:
    """One INSERT statement for `rows` rows; its parameters are the rows' ROW_COLUMNS values, row after row."""
    one = "(" + ",".join("?" * len(ROW_COLUMNS)) + ")"
    return f"INSERT INTO {TABLE} ({', '.join(ROW_COLUMNS)}) VALUES " + ",".join([one] * rows)


def parse_record(text: str) -> tuple[AuditRecord, str]:
    """A row's canonical JSON back as (record, prev_hash). Raises ValueError if it is not one: not JSON, not
    an object, a member missing or unknown (TypeError from the record's types is left to the encoder)."""
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("the record is not a JSON object")
    prev_hash = fields.pop("prev_hash", None)
    if not isinstance(prev_hash, str):
        raise ValueError("the record has no prev_hash string")
    if fields.keys() != _FIELD_NAMES:
        missing, unknown = sorted(_FIELD_NAMES - fields.keys()), sorted(fields.keys() - _FIELD_NAMES)
        raise ValueError(f"the record's members are wrong (missing {missing}, unknown {unknown})")
    for name in _LIST_FIELDS:
        if isinstance(fields[name], list):
            fields[name] = tuple(fields[name])
    for name in _FLOAT_FIELDS:
        # RFC 8785 §3.2.2.3 writes an integral number without a fraction (2.0 as 2), so a latency of exactly
        # 2 ms comes back from JSON as int 2: give it back as the float it was.
        if type(fields[name]) is int:
            fields[name] = float(fields[name])
    return AuditRecord(**fields), prev_hash


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
