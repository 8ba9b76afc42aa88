"""`audit copy`: an embedded SQLite log moved into the shared store as a chain of its own, hashes and all."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mcp_gateway.audit.postgres.appender import append_group
from mcp_gateway.audit.postgres.schema import (
    CHAINS,
    READ_HEAD_SQL,
    RECORDS,
    REGISTER_CHAIN_SQL,
    connect,
    display_url,
    ensure_schema,
)
from mcp_gateway.audit.postgres.session import run_blocking
from mcp_gateway.audit.record import GENESIS_HASH
from mcp_gateway.audit.sqlite.reader import SQLiteAuditReader, open_read_only
from mcp_gateway.audit.sqlite.schema import SELECT_ROWS_SQL

ROWS_PER_GROUP: Final = 1_000
_TIMEOUT: Final = 30.0


class CopyRefused(ValueError):
    """The copy would not leave a log that verifies: the source is broken, or the target holds another log."""


@dataclass(frozen=True)
class CopyResult:
    chain_id: str
    copied: int  # rows written by this run
    total: int  # rows the chain holds now, the same as the source


def chain_id_for(first_hash: str) -> str:
    """The copied chain's id, fixed by the source's first record: a second run finds the chain it made."""
    return "sqlite-" + hashlib.sha256(first_hash.encode()).hexdigest()[:16]


def copy_sqlite_log(path: Path, url: str) -> CopyResult:
    """Copy the SQLite log at `path` into the PostgreSQL log at `url` with its seq, records and hashes
    unchanged, as one transaction. A second run copies only what the source gained since (nothing, if
    nothing); a target chain that disagrees with the source, or a source that does not verify, is refused."""
    verdict = SQLiteAuditReader(path).verify()
    if not verdict.ok:
        raise CopyRefused(
            f"{path} does not verify (seq {verdict.broken_seq}: {verdict.reason}); a copy would carry the break"
        )
    if verdict.head_seq == 0:
        raise CopyRefused(f"{path} holds no records: nothing to copy")
    return run_blocking(lambda: _copy(path, url, (verdict.head_seq, verdict.head_hash)))


async def _copy(path: Path, url: str, end: tuple[int, str]) -> CopyResult:
    source = open_read_only(path)  # in the thread that reads it: sqlite3 connections stay in theirs
    try:
        first = source.execute("SELECT hash FROM audit_records WHERE seq = 1").fetchone()
        return await _copy_rows(source, path, url, chain_id_for(str(first[0])), end)
    finally:
        source.close()


async def _copy_rows(
    source: sqlite3.Connection, path: Path, url: str, chain_id: str, end: tuple[int, str]
) -> CopyResult:
    target = await connect(url, timeout=_TIMEOUT, statement_timeout=_TIMEOUT * 10)
    try:
        await ensure_schema(target)
        async with target.transaction():
            # Two copies of the same file at once: the second waits here, then finds the first one's rows.
            await target.execute("SELECT pg_advisory_xact_lock(hashtext($1))", chain_id)
            head_row = await target.fetchrow(READ_HEAD_SQL, chain_id)
            if head_row is None:
                head = (0, GENESIS_HASH)
                await target.execute(REGISTER_CHAIN_SQL, chain_id, *head, time.time(), f"audit copy of {path}")
            else:
                head = (int(head_row[0]), str(head_row[1]))
                _check_prefix(source, head, chain_id, url)
            copied = 0
            for columns in _groups(source, after_seq=head[0], up_to_seq=end[0]):
                group_end = (int(columns[0][-1]), str(columns[-1][-1]))
                await append_group(target, chain_id, columns, group_end, _TIMEOUT * 10)
                copied += len(columns[0])
            await _check_end(target, chain_id, end)
    finally:
        await target.close()
    return CopyResult(chain_id, copied, end[0])


def _check_prefix(source: sqlite3.Connection, head: tuple[int, str], chain_id: str, url: str) -> None:
    row = source.execute("SELECT hash FROM audit_records WHERE seq = ?", (head[0],)).fetchone()
    if head[0] == 0 or (row is not None and str(row[0]) == head[1]):
        return
    raise CopyRefused(
        f"chain {chain_id} in {display_url(url)} ends at seq {head[0]} with hash {head[1]}, which this log does not "
        "hold there: it is not a copy of this file (run `mcp-gateway audit verify` on both)"
    )


async def _check_end(target: Any, chain_id: str, end: tuple[int, str]) -> None:
    # The head the source verified to, or the copy is rolled back: never leave a chain that would not verify.
    tail = await target.fetchrow(
        f"SELECT h.head_seq, h.head_hash, count(r.seq) FROM {CHAINS} AS h LEFT JOIN {RECORDS} AS r "
        "ON r.chain_id = h.chain_id WHERE h.chain_id = $1 GROUP BY h.head_seq, h.head_hash",
        chain_id,
    )
    if tail is None or (int(tail[0]), str(tail[1])) != end or int(tail[2]) != end[0]:
        raise CopyRefused(f"chain {chain_id} would end at {tuple(tail or ())}, not at the source's head {end}")


def _groups(source: sqlite3.Connection, *, after_seq: int, up_to_seq: int) -> Iterator[list[list[Any]]]:
    """The source's rows in (after_seq, up_to_seq] as APPEND_SQL's six column arrays, ROWS_PER_GROUP at a time
    (a gateway may still be appending to the source: the copy stops where the source was verified)."""
    sql = SELECT_ROWS_SQL + " WHERE seq > ? AND seq <= ? ORDER BY seq"
    cursor = source.execute(sql, (after_seq, up_to_seq))
    while rows := cursor.fetchmany(ROWS_PER_GROUP):
        seqs, event_ids, phases, timestamps, texts, hashes = (list(column) for column in zip(*rows, strict=True))
        yield [[int(s) for s in seqs], event_ids, phases, [float(t) for t in timestamps], texts, hashes]
