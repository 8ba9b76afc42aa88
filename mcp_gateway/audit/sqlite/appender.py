"""The audit writer's database work: opening the file for appending, and sealing groups onto the chain."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Final, TypeVar

from mcp_gateway.audit.chain import chain_position as _position
from mcp_gateway.audit.chain import seal
from mcp_gateway.audit.record import GENESIS_HASH, AuditRecord
from mcp_gateway.audit.sqlite.schema import (
    ROW_COLUMNS,
    SCHEMA_DDL,
    SCHEMA_VERSION,
    insert_rows_sql,
    read_head,
    read_tail,
    schema_version,
    uri_for,
    write_head,
)

logger = logging.getLogger(__name__)

SYNCHRONOUS: Final = frozenset(("full", "normal"))
# Rows per INSERT statement: a group up to this size is one statement; larger ones are split, so that few
# distinct statements are ever prepared and none has more than 999 parameters (SQLite's limit before 3.32).
ROWS_PER_STATEMENT: Final = 128
_W = TypeVar("_W")


def open_for_appending(path: Path, *, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection for the one writer: WAL, `synchronous` ("full" or "normal"), the schema created if
    missing."""
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}, not {synchronous!r}")
    if not path.exists():
        # Audit rows name users and may hold arguments: keep the file (and, after it, SQLite's
        # -wal and -shm files, which copy its mode) private to the gateway's user.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(
        uri_for(path, read_only=False),
        uri=True,
        isolation_level=None,  # autocommit outside the explicit BEGIN IMMEDIATE ... COMMIT of each group
        check_same_thread=False,
        timeout=busy_timeout_ms / 1000,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("audit database %s is in journal mode %s, not WAL", path, mode)
        # FULL: each commit's fsync makes its group durable before the waiters wake, even against power
        # loss. NORMAL: a commit is in the OS's hands when it returns, so it survives the gateway being
        # killed but not the machine losing power; the WAL is fsynced at checkpoints only.
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        if schema_version(conn) is None:
            _create_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA_DDL:
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        if read_head(conn) is None and read_tail(conn) is None:
            write_head(conn, 0, GENESIS_HASH)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def chain_position(conn: sqlite3.Connection) -> tuple[tuple[int, str], dict[str, Any] | None]:
    """Where the next record chains on: (seq, hash). Second, when the last row and the head checkpoint
    disagree, the details for an audit event saying so (None when they agree)."""
    return _position(read_head(conn), read_tail(conn))


def last_row(conn: sqlite3.Connection) -> tuple[int, str]:
    """The last row's (seq, hash); (0, GENESIS_HASH) for an empty log."""
    return read_tail(conn) or (0, GENESIS_HASH)


def commit_group(
    conn: sqlite3.Connection, pending: list[tuple[AuditRecord, _W]], head: tuple[int, str]
) -> tuple[tuple[int, str], list[tuple[AuditRecord, _W]], list[tuple[_W, Exception]]]:
    """Seal `pending` (records, each with a tag) onto the chain after `head` and commit it as one
    transaction that also moves the head checkpoint. Returns the new head, the items written, and the tags
    of the records refused (a field of the wrong type or outside JSON) with why.

    Raises sqlite3.Error with nothing written, IntegrityError in particular when `head` is not the end of
    the log (another process appended): the caller rolls back and chains on from `last_row`.
    """
    seq, prev = head
    params: list[object] = []
    written: list[tuple[AuditRecord, _W]] = []
    rejected: list[tuple[_W, Exception]] = []
    for item in pending:
        record, tag = item
        try:
            text, digest = seal(record, prev)
        except (TypeError, ValueError) as exc:
            rejected.append((tag, exc))
            continue
        seq += 1
        params += (seq, record.event_id, record.phase, record.timestamp, text, digest)
        written.append(item)
        prev = digest
    if not written:
        return head, written, rejected
    conn.execute("BEGIN IMMEDIATE")
    width = ROWS_PER_STATEMENT * len(ROW_COLUMNS)
    for start in range(0, len(params), width):
        chunk = params[start : start + width]
        conn.execute(insert_rows_sql(len(chunk) // len(ROW_COLUMNS)), chunk)
    write_head(conn, seq, prev)
    conn.execute("COMMIT")
    return (seq, prev), written, rejected


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("audit rollback failed")
