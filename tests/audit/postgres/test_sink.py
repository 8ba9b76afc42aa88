"""The PostgreSQL sink against a real server: durable before return, group commit, a chain per writer, schema."""

from __future__ import annotations

import json

import anyio
import pytest

from mcp_gateway.audit.postgres import PostgresAuditReader, PostgresAuditSink
from mcp_gateway.audit.postgres.schema import SCHEMA_VERSION
from mcp_gateway.audit.record import GENESIS_HASH
from mcp_gateway.audit.store import SchemaError
from mcp_gateway.errors import AuditUnavailable

from ..conftest import make_record
from ._pg import execute, fetch, opened

pytestmark = pytest.mark.anyio


async def test_append_returns_once_another_connection_can_read_the_committed_record(pg_url: str) -> None:
    async with opened(pg_url) as sink:
        for i in range(3):
            record = make_record(timestamp=1000.0 + i)
            with anyio.fail_after(10):
                await sink.append(record)
            # No flush, no wait: a fresh connection (another process, after a crash) already sees it.
            rows = await fetch(pg_url, "SELECT seq, event_id FROM audit_records WHERE event_id = $1", record.event_id)
            assert rows == [(i + 1, record.event_id)]
        assert sink.head[0] == 3 and sink.healthy
        settings = await fetch(pg_url, "SELECT setting FROM pg_settings WHERE name = 'synchronous_commit'")
        assert settings == [("on",)]


async def test_concurrent_appends_share_commits_and_all_become_durable(pg_url: str) -> None:
    records = [make_record(timestamp=2000.0 + i) for i in range(200)]
    async with opened(pg_url) as sink:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for record in records:
                    tg.start_soon(sink.append, record)
        stats = sink.stats
    assert stats.appended == 200 and stats.failed_batches == 0
    assert stats.commits < 100 and stats.largest_batch > 2  # many records per commit
    stored = await fetch(pg_url, "SELECT event_id FROM audit_records")
    assert sorted(row[0] for row in stored) == sorted(r.event_id for r in records)
    assert PostgresAuditReader(pg_url).verify().ok


async def test_nowait_records_are_written_without_anyone_waiting(pg_url: str) -> None:
    async with opened(pg_url, nowait_delay_seconds=0.01) as sink:
        intent = make_record(timestamp=3000.0)
        await sink.append(intent)
        sink.append_nowait(make_record("outcome", timestamp=3001.0, event_id=intent.event_id, outcome="ok"))
        with anyio.fail_after(10):
            await sink.flush()
    rows = list(PostgresAuditReader(pg_url).query())
    assert [(r["event_id"], r["outcome"]) for r in rows] == [(intent.event_id, "ok")]


async def test_two_writers_keep_a_chain_each_and_both_verify(pg_url: str) -> None:
    async with opened(pg_url) as first, opened(pg_url) as second:
        assert first.chain_id != second.chain_id
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(60):
                    tg.start_soon((first, second)[i % 2].append, make_record(timestamp=4000.0 + i))
        assert first.head[0] == second.head[0] == 30
    chains = await fetch(pg_url, "SELECT chain_id, head_seq, head_hash FROM audit_chains ORDER BY chain_id")
    assert sorted((first.chain_id, second.chain_id)) == [c[0] for c in chains]
    assert {c[0]: (c[1], c[2]) for c in chains} == {first.chain_id: first.head, second.chain_id: second.head}
    result = PostgresAuditReader(pg_url).verify()
    assert result.ok and result.records == 60 and result.chains is not None
    assert {v.chain_id: (v.result.ok, v.result.records) for v in result.chains} == {
        first.chain_id: (True, 30),
        second.chain_id: (True, 30),
    }


async def test_gateways_starting_together_create_the_schema_once(pg_url: str) -> None:
    sinks = [PostgresAuditSink(pg_url) for _ in range(4)]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for sink in sinks:
                tg.start_soon(sink.start)
        for sink in sinks:
            await sink.append(make_record())
            await sink.aclose()
    assert await fetch(pg_url, "SELECT version FROM audit_schema_version") == [(SCHEMA_VERSION,)]
    assert len(await fetch(pg_url, "SELECT chain_id FROM audit_chains")) == 4


async def test_an_unknown_schema_version_is_refused_by_writer_and_reader(pg_url: str) -> None:
    async with opened(pg_url):
        pass
    await execute(pg_url, "UPDATE audit_schema_version SET version = 99")
    sink = PostgresAuditSink(pg_url)
    with anyio.fail_after(15), pytest.raises(AuditUnavailable, match="schema version 99 is newer"):
        await sink.start()
    with pytest.raises(SchemaError, match="schema version 99 is newer"):
        PostgresAuditReader(pg_url).verify()


async def test_the_reader_never_creates_the_schema(pg_url: str) -> None:
    with pytest.raises(FileNotFoundError, match="no audit log"):
        list(PostgresAuditReader(pg_url).query())
    assert await fetch(pg_url, "SELECT to_regclass('audit_records')") == [(None,)]


async def test_a_record_the_chain_cannot_hold_is_refused_alone(pg_url: str) -> None:
    async with opened(pg_url) as sink:
        good = make_record(timestamp=5000.0)
        bad = make_record(timestamp=5001.0, token_ttl="not a number")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sink.append, good)
                with pytest.raises(AuditUnavailable, match="rejected"):
                    await sink.append(bad)
        assert sink.stats.rejected == 1 and sink.healthy
    assert [r["event_id"] for r in PostgresAuditReader(pg_url).query()] == [good.event_id]


async def test_a_restart_with_the_same_chain_id_continues_it(pg_url: str) -> None:
    async with opened(pg_url, chain_id="fixed") as sink:
        await sink.append(make_record(timestamp=6000.0))
    async with opened(pg_url, chain_id="fixed") as sink:
        assert sink.head[0] == 1
        await sink.append(make_record(timestamp=6001.0))
    rows = await fetch(pg_url, "SELECT seq, record FROM audit_records WHERE chain_id = 'fixed' ORDER BY seq")
    assert [r[0] for r in rows] == [1, 2]
    assert json.loads(rows[0][1])["prev_hash"] == GENESIS_HASH
    assert PostgresAuditReader(pg_url).verify().ok
