"""The PostgreSQL writer's database work: opening a chain of its own, and sealing groups onto it."""

from __future__ import annotations

import os
import socket
import time
from typing import Any, TypeVar

from mcp_gateway.audit.chain import chain_position, seal
from mcp_gateway.audit.postgres.schema import (
    APPEND_SQL,
    READ_HEAD_SQL,
    READ_TAIL_SQL,
    REGISTER_CHAIN_SQL,
    ensure_schema,
)
from mcp_gateway.audit.record import GENESIS_HASH, AuditRecord

_W = TypeVar("_W")


def new_chain_id() -> str:
    """A chain per writer start: random, so two processes (or one restarted) never share a head."""
    return os.urandom(8).hex()


async def open_chain(conn: Any, chain_id: str) -> tuple[tuple[int, str], dict[str, Any] | None]:
    """Create the schema if needed and register `chain_id` (or pick up where it ended, if it exists).
    Returns where the next record chains on, and the details of a discontinuity when the chain's last row
    and its head checkpoint disagree (rows removed from its end while the writer was away)."""
    await ensure_schema(conn)
    head_row = await conn.fetchrow(READ_HEAD_SQL, chain_id)
    if head_row is None:
        writer = f"{socket.gethostname()}:{os.getpid()}"
        await conn.execute(REGISTER_CHAIN_SQL, chain_id, 0, GENESIS_HASH, time.time(), writer)
        return (0, GENESIS_HASH), None
    tail_row = await conn.fetchrow(READ_TAIL_SQL, chain_id)
    head = (int(head_row[0]), str(head_row[1]))
    tail = None if tail_row is None else (int(tail_row[0]), str(tail_row[1]))
    if head == (0, GENESIS_HASH) and tail is None:
        return head, None
    return chain_position(head, tail)


def seal_group(
    pending: list[tuple[AuditRecord, _W]], head: tuple[int, str]
) -> tuple[tuple[int, str], list[list[Any]], list[tuple[AuditRecord, _W]], list[tuple[_W, Exception]]]:
    """Seal `pending` (records, each with a tag) onto the chain after `head`: the new head, the six column
    arrays for APPEND_SQL, the items sealed, and the tags of the records refused (a field of the wrong type
    or outside JSON) with why. Pure: nothing is written."""
    seq, prev = head
    columns: list[list[Any]] = [[], [], [], [], [], []]
    seqs, event_ids, phases, timestamps, texts, hashes = columns
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
        seqs.append(seq)
        event_ids.append(record.event_id)
        phases.append(record.phase)
        timestamps.append(float(record.timestamp))
        texts.append(text)
        hashes.append(digest)
        written.append(item)
        prev = digest
    return (seq, prev), columns, written, rejected


async def append_group(
    conn: Any, chain_id: str, columns: list[list[Any]], head: tuple[int, str], timeout: float
) -> None:
    """Insert the sealed rows and move the chain's head to `head`, as one statement: one transaction, whose
    commit (synchronous_commit on, see `schema.connect`) returns once it is durable."""
    await conn.execute(APPEND_SQL, chain_id, *columns, head[0], head[1], timeout=timeout)
