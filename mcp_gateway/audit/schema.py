"""The audit database's SQLite schema, and how a record maps to a row and back."""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final

from mcp_gateway.audit.record import FIELD_KINDS, RECORD_FIELDS, AuditRecord, string_array_json

SCHEMA_VERSION: Final = 1
TABLE: Final = "audit_records"

_SQL_TYPES: Final = {
    "str": "TEXT NOT NULL",
    "str?": "TEXT",
    "int?": "INTEGER",
    "float": "REAL NOT NULL",
    "float?": "REAL",
    "list": "TEXT NOT NULL",  # JSON array of strings
}
_COLUMNS_DDL: Final = ",\n    ".join(f"{name} {_SQL_TYPES[kind]}" for name, kind in FIELD_KINDS)
# Every statement is idempotent so that two processes racing to create the file both succeed.
SCHEMA_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    seq INTEGER PRIMARY KEY,
    {_COLUMNS_DDL},
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_event_id ON {TABLE} (event_id)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_timestamp ON {TABLE} (timestamp)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_agent_id ON {TABLE} (agent_id)",
)

ROW_COLUMNS: Final[tuple[str, ...]] = ("seq", *RECORD_FIELDS, "prev_hash", "hash")
INSERT_SQL: Final = f"INSERT INTO {TABLE} ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
SELECT_ROWS_SQL: Final = f"SELECT {', '.join(ROW_COLUMNS)} FROM {TABLE}"
_LIST_FIELDS: Final = frozenset(name for name, kind in FIELD_KINDS if kind == "list")
_LIST_INDEXES: Final = tuple(i for i, name in enumerate(RECORD_FIELDS) if name in _LIST_FIELDS)
_FIELDS_OF: Final = operator.attrgetter(*RECORD_FIELDS)
_WRITE_HEAD_SQL: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES ('head_seq', ?), ('head_hash', ?)"
# A writer's own connection moves the head checkpoint with every row it inserts, inside the inserting
# statement: a group of rows is then one statement and one implicit transaction, one round trip into SQLite
# instead of BEGIN / INSERT / head / COMMIT. TEMP, so it lives in that connection only: nothing is added to
# the file, and a row inserted by anyone else (by hand, say) still leaves the checkpoint where it was.
HEAD_TRIGGER_DDL: Final = f"""CREATE TEMP TRIGGER IF NOT EXISTS {TABLE}_head AFTER INSERT ON main.{TABLE}
BEGIN
    INSERT INTO meta (key, value) VALUES ('head_seq', NEW.seq), ('head_hash', NEW.hash)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
END"""


class SchemaError(Exception):
    """The file is not an audit database this version understands."""


def record_values(record: AuditRecord) -> list[Any]:
    """The record's fields in column order, string lists as JSON arrays."""
    values: list[Any] = list(_FIELDS_OF(record))
    for i in _LIST_INDEXES:
        # What json.dumps(list, ensure_ascii=False) would write, without its per-call overhead.
        values[i] = string_array_json(values[i]) or "[" + ",".join(map(encode_basestring, values[i])) + "]"
    return values


@functools.lru_cache(maxsize=64)
def insert_rows_sql(rows: int) -> str:
    """One INSERT statement for `rows` rows; its parameters are the rows' ROW_COLUMNS values, row after row."""
    one = "(" + ",".join("?" * len(ROW_COLUMNS)) + ")"
    return f"INSERT INTO {TABLE} ({', '.join(ROW_COLUMNS)}) VALUES " + ",".join([one] * rows)


def record_from_values(values: tuple[Any, ...] | list[Any]) -> AuditRecord:
    """Inverse of `record_values`."""
    fields = dict(zip(RECORD_FIELDS, values, strict=True))
    for name in _LIST_FIELDS:
        raw = fields[name]
        fields[name] = tuple(json.loads(raw)) if isinstance(raw, str) else raw
    return AuditRecord(**fields)


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
    conn.execute(_WRITE_HEAD_SQL, (str(seq), hash_))
