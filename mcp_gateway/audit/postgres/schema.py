"""The PostgreSQL audit schema: its tables, its version, creating it once under an advisory lock, and connecting."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mcp_gateway.audit.store import SchemaError

SCHEMA_VERSION: Final = 1
VERSION_TABLE: Final = "audit_schema_version"
CHAINS: Final = "audit_chains"
RECORDS: Final = "audit_records"
FIELDS_VIEW: Final = "audit_fields"
# Every gateway that starts on an empty database races to create the schema; they queue on this lock
# (pg_advisory_xact_lock, released at commit), and the losers find it made. The key is arbitrary but fixed:
# "mcpgwaud" as a big-endian int64.
SCHEMA_LOCK_KEY: Final = 0x6D63_7067_7761_7564

# Each writer process appends to its own chain (a row in audit_chains, its head checkpoint moved in the same
# statement that inserts a group), so writers never contend for one head. A row is the record's canonical
# JSON with "prev_hash" inside (exactly the bytes its hash covers), as in SQLite, plus the lookup columns.
# `tx` is the writing transaction's id: every row with a tx below the oldest running transaction is
# committed and visible, which gives `audit export` a cursor that never skips a row committed late.
_DDL: Final = (
    f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)",
    f"""CREATE TABLE {CHAINS} (
    chain_id text PRIMARY KEY,
    head_seq bigint NOT NULL,
    head_hash text NOT NULL,
    started_at double precision NOT NULL,
    writer text NOT NULL
)""",
    f"""CREATE TABLE {RECORDS} (
    chain_id text NOT NULL,
    seq bigint NOT NULL,
    event_id text NOT NULL,
    phase text NOT NULL,
    timestamp double precision NOT NULL,
    record text NOT NULL,
    hash text NOT NULL,
    tx bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    PRIMARY KEY (chain_id, seq)
)""",
    f"CREATE INDEX {RECORDS}_event_id ON {RECORDS} (event_id)",
    f"CREATE INDEX {RECORDS}_timestamp ON {RECORDS} (timestamp)",
    f"CREATE INDEX {RECORDS}_tx ON {RECORDS} (tx)",
    # Every field as a column, for auditors using psql (json, not jsonb: a record may hold an escaped NUL).
    f"""CREATE VIEW {FIELDS_VIEW} AS SELECT chain_id, seq, record::json AS fields, hash FROM {RECORDS}""",
)

# One statement per group: the rows (as arrays, so one prepared statement serves every group size) and the
# head checkpoint move together, atomically, in one round trip. Measured in bench/audit_pg_driver.py.
APPEND_SQL: Final = f"""
WITH written AS (
    INSERT INTO {RECORDS} (chain_id, seq, event_id, phase, timestamp, record, hash)
    SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[])
    RETURNING 1
)
UPDATE {CHAINS} SET head_seq = $8, head_hash = $9 WHERE chain_id = $1 AND (SELECT count(*) FROM written) > 0
"""
REGISTER_CHAIN_SQL: Final = (
    f"INSERT INTO {CHAINS} (chain_id, head_seq, head_hash, started_at, writer) VALUES ($1, $2, $3, $4, $5)"
)
READ_HEAD_SQL: Final = f"SELECT head_seq, head_hash FROM {CHAINS} WHERE chain_id = $1"
READ_TAIL_SQL: Final = f"SELECT seq, hash FROM {RECORDS} WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1"


_EXISTS_SQL: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1)"
)


def display_url(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(url: str, *, timeout: float, statement_timeout: float | None = None) -> Any:
    """One connection with client-side connect timeout and, if given, a server-side statement timeout.
    `synchronous_commit` is forced on: a commit returns once its WAL is flushed, whatever the server's default."""
    settings = {"application_name": "mcp-gateway audit", "synchronous_commit": "on"}
    if statement_timeout is not None:
        settings["statement_timeout"] = str(max(1, int(statement_timeout * 1000)))
    return await asyncpg.connect(url, timeout=timeout, command_timeout=statement_timeout, server_settings=settings)


async def schema_version(conn: Any) -> int | None:
    """The schema version in the connection's search path, or None when there is no audit schema yet.
    Raises SchemaError for a version this build does not read or write."""
    # A query of the catalog, not to_regclass(): that reads the backend's catalog cache, which waiting on an
    # advisory lock does not refresh, so a gateway that waited for another's DDL would not see the table.
    if not await conn.fetchval(_EXISTS_SQL, VERSION_TABLE):
        return None
    versions = [int(row[0]) for row in await conn.fetch(f"SELECT version FROM {VERSION_TABLE}")]
    if len(versions) != 1:
        raise SchemaError(
            f"the {VERSION_TABLE} table holds {len(versions)} rows, not one: not an mcp-gateway audit log"
        )
    version = versions[0]
    if version != SCHEMA_VERSION:
        newer = "newer" if version > SCHEMA_VERSION else "older"
        raise SchemaError(
            f"audit schema version {version} is {newer} than the one this mcp-gateway reads and writes "
            f"({SCHEMA_VERSION}); run the mcp-gateway that wrote it, or point [audit] url at another schema"
        )
    return version


async def ensure_schema(conn: Any) -> None:
    """Create the schema if it is missing (once, however many gateways start together); refuse an unknown one."""
    if await schema_version(conn) is not None:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        if await schema_version(conn) is not None:  # another gateway made it while we waited
            return
        for statement in _DDL:
            await conn.execute(statement)
        await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", SCHEMA_VERSION)
