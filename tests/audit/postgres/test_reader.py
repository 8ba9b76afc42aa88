"""`audit query` and `audit export` give the same rows from PostgreSQL as from SQLite, plus `chain_id`."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_gateway.audit.postgres import PostgresAuditReader
from mcp_gateway.audit.query import QueryFilters
from mcp_gateway.audit.record import AuditRecord, outcome_of
from mcp_gateway.audit.sqlite import SQLiteAuditReader, SQLiteAuditSink

from ..conftest import BASE_TIME, make_record
from ._pg import opened

pytestmark = pytest.mark.anyio


def call(t: float, outcome: str | None = "ok", **fields: Any) -> list[AuditRecord]:
    intent = make_record(timestamp=t, **fields)
    if outcome is None:
        return [intent]
    return [intent, outcome_of(intent, outcome=outcome, timestamp=t + 0.5, http_status=200, latency_ms=500.0)]


RECORDS = [
    *call(BASE_TIME),
    *call(BASE_TIME + 60, outcome=None, agent_id="agent-8", tool="delete_everything"),  # killed mid-call
    make_record(
        "outcome",
        timestamp=BASE_TIME + 120,
        decision="step_up",
        outcome="denied",
        http_status=403,
        scopes_required=("admin",),
        tool="delete_everything",
    ),
    make_record("event", timestamp=BASE_TIME + 180, event_type="tool_quarantined", detail='{"old":"aa","new":"bb"}'),
    *call(BASE_TIME + 240, delegating_user="bob@example.com", mcp_server="files", session_id="sess-2"),
    # Client-chosen text the databases must keep exactly: an escaped NUL, non-ASCII, a lone surrogate.
    *call(BASE_TIME + 300, request_context="nul \x00 caf\u00e9 \ud800 end", tool="echo"),
]


async def write_both(sqlite_path: Path, url: str, records: Sequence[AuditRecord]) -> None:
    sink = SQLiteAuditSink(sqlite_path)
    with anyio.fail_after(10):
        await sink.start()
        for record in records:
            await sink.append(record)
        await sink.aclose()
    async with opened(url) as pg_sink:
        with anyio.fail_after(10):
            for record in records:
                await pg_sink.append(record)


FILTERS = [
    QueryFilters(),
    QueryFilters(agent="agent-8"),
    QueryFilters(user="bob@example.com"),
    QueryFilters(server="files"),
    QueryFilters(tool="delete_everything"),
    QueryFilters(decision="step_up"),
    QueryFilters(outcome="aborted"),
    QueryFilters(session="sess-2"),
    QueryFilters(since=BASE_TIME + 60, until=BASE_TIME + 180),
    QueryFilters(limit=2),
    QueryFilters(tool="delete_everything", limit=1),
    QueryFilters(agent="nobody"),
]


async def test_query_rows_are_the_sqlite_rows_plus_the_chain_id(pg_url: str, tmp_path: Path) -> None:
    await write_both(tmp_path / "audit.db", pg_url, RECORDS)
    sqlite, postgres = SQLiteAuditReader(tmp_path / "audit.db"), PostgresAuditReader(pg_url)
    chain_ids = set()
    for filters in FILTERS:
        expected = list(sqlite.query(filters))
        rows = list(postgres.query(filters))
        chain_ids |= {row.pop("chain_id") for row in rows}
        assert rows == expected, filters
    assert len(chain_ids) == 1
    assert [r["request_context"] for r in postgres.query(QueryFilters(limit=1))] == ["nul \x00 café \\ud800 end"]


async def test_export_lines_are_the_sqlite_lines_plus_the_chain_id(pg_url: str, tmp_path: Path) -> None:
    await write_both(tmp_path / "audit.db", pg_url, RECORDS)
    sqlite_out, pg_out = io.StringIO(), io.StringIO()
    SQLiteAuditReader(tmp_path / "audit.db").export(sqlite_out)
    result = PostgresAuditReader(pg_url).export(pg_out)
    assert result.count == len(RECORDS)
    lines = [json.loads(line) for line in pg_out.getvalue().splitlines()]
    assert len({line.pop("chain_id") for line in lines}) == 1
    assert lines == [json.loads(line) for line in sqlite_out.getvalue().splitlines()]


async def test_export_resumes_after_its_cursor_or_a_calls_first_record_across_chains(pg_url: str) -> None:
    first_batch, second_batch = call(BASE_TIME), call(BASE_TIME + 10)
    async with opened(pg_url) as sink:
        for record in first_batch:
            await sink.append(record)
    first = io.StringIO()
    cursor = PostgresAuditReader(pg_url).export(first)
    assert cursor.count == 2 and cursor.last_seq is not None
    async with opened(pg_url) as other:  # another writer, another chain
        for record in second_batch:
            await other.append(record)
    after_cursor, after_event, nothing = io.StringIO(), io.StringIO(), io.StringIO()
    resumed = PostgresAuditReader(pg_url).export(after_cursor, after_seq=cursor.last_seq)
    assert resumed.count == 2
    assert [json.loads(line)["event_id"] for line in after_cursor.getvalue().splitlines()] == [
        r.event_id for r in second_batch
    ]
    assert {json.loads(line)["chain_id"] for line in after_cursor.getvalue().splitlines()} == {other.chain_id}
    PostgresAuditReader(pg_url).export(after_event, after_event_id=first_batch[0].event_id)
    assert [json.loads(line)["phase"] for line in after_event.getvalue().splitlines()] == [
        "outcome",
        "intent",
        "outcome",
    ]
    assert PostgresAuditReader(pg_url).export(nothing, after_seq=resumed.last_seq).count == 0
    with pytest.raises(LookupError):
        PostgresAuditReader(pg_url).export(io.StringIO(), after_event_id="no-such-event")
