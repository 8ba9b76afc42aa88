"""The PostgreSQL sink when the database stops answering or drops its connection: fail closed, never block
the event loop, heal by itself."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from mcp_gateway.audit.events import RECOVERED_EVENT
from mcp_gateway.audit.postgres import PostgresAuditReader, PostgresAuditSink
from mcp_gateway.errors import AuditUnavailable

from ..conftest import make_record
from ._pg import StallingProxy, execute, fetch, opened

pytestmark = pytest.mark.anyio


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()


async def test_a_server_that_accepts_and_never_answers_fails_start_within_the_connect_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepted, and never a byte back

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sink = PostgresAuditSink(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout_seconds=0.5)
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(AuditUnavailable, match="cannot open the audit store"):
            await sink.start()
        assert time.monotonic() - started < 3
        assert not sink.healthy
        with pytest.raises(AuditUnavailable):
            await sink.append(make_record())
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_stalled_database_fails_appends_within_the_timeout_without_blocking_the_loop_then_heals(
    pg_url: str,
) -> None:
    target = urlsplit(pg_url)
    async with StallingProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        options = {"statement_timeout_seconds": 0.5, "connect_timeout_seconds": 0.5, "retry_seconds": 0.2}
        async with opened(through(pg_url, proxy.port), **options) as sink:
            await sink.append(make_record(timestamp=1000.0))
            proxy.stalled = True
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await anyio.sleep(0.01)
                    ticks += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(tick)
                started = time.monotonic()
                with anyio.fail_after(10), pytest.raises(AuditUnavailable):
                    await sink.append(make_record(timestamp=1001.0))
                waited = time.monotonic() - started
                tg.cancel_scope.cancel()
            assert 0.4 < waited < 3
            assert ticks > waited / 0.01 / 4  # the loop kept running while the store was stuck
            assert not sink.healthy and sink.stats.failed_batches >= 1

            proxy.stalled = False
            # No one calls the sink: its probe reconnects and says so in the log.
            with anyio.fail_after(10):
                while not sink.healthy:
                    await anyio.sleep(0.05)
            await sink.append(make_record(timestamp=1002.0))
    rows = list(PostgresAuditReader(pg_url).query())
    assert [r["event_type"] for r in rows if r["event_type"]] == [RECOVERED_EVENT]
    assert PostgresAuditReader(pg_url).verify().ok


async def test_a_backend_terminated_mid_write_fails_that_append_then_the_sink_heals(pg_url: str) -> None:
    async with opened(pg_url, statement_timeout_seconds=10.0) as sink:
        await sink.append(make_record(timestamp=2000.0))
        pid = sink.backend_pid
        assert pid is not None
        blocker = await asyncpg.connect(pg_url)
        try:
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_append_expecting_failure_to, sink, "cannot write")
                    with anyio.fail_after(10):  # the write is in flight, waiting for the lock
                        while not await fetch(pg_url, WAITING_SQL, pid):
                            await anyio.sleep(0.02)
                    assert await execute(pg_url, "SELECT pg_terminate_backend($1, 5000)", pid) == "SELECT 1"
        finally:
            await blocker.close()
        assert not sink.healthy and sink.stats.failed_batches == 1
        with anyio.fail_after(10):
            await sink.append(make_record(timestamp=2002.0))  # a new connection, the chain read back
        assert sink.healthy and sink.backend_pid not in (None, pid)
    assert PostgresAuditReader(pg_url).verify().ok
    kinds = [r["event_type"] for r in PostgresAuditReader(pg_url).query()]
    assert kinds == [None, None, RECOVERED_EVENT]  # the two records (1970 timestamps), then the recovery (now)


async def test_a_backend_terminated_while_idle_is_replaced_before_the_next_write(pg_url: str) -> None:
    async with opened(pg_url) as sink:
        await sink.append(make_record(timestamp=2100.0))
        pid = sink.backend_pid
        assert await execute(pg_url, "SELECT pg_terminate_backend($1, 5000)", pid) == "SELECT 1"
        with anyio.fail_after(10):
            while sink.backend_pid is not None:  # the driver sees the server close the connection
                await anyio.sleep(0.02)
            await sink.append(make_record(timestamp=2101.0))
        assert sink.healthy and sink.stats.failed_batches == 0 and sink.backend_pid not in (None, pid)
    assert PostgresAuditReader(pg_url).verify().ok


WAITING_SQL = "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'"


async def _append_expecting_failure_to(sink: PostgresAuditSink, message: str) -> None:
    with pytest.raises(AuditUnavailable, match=message):
        await sink.append(make_record(timestamp=2001.0))


async def test_a_full_queue_refuses_at_once(pg_url: str) -> None:
    target = urlsplit(pg_url)
    async with StallingProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        options = {"statement_timeout_seconds": 1.0, "max_queue": 2, "max_batch": 1}
        async with opened(through(pg_url, proxy.port), **options) as sink:
            proxy.stalled = True
            failures: list[str] = []
            with anyio.fail_after(15):
                async with anyio.create_task_group() as tg:
                    for i in range(5):  # all queued before the writer runs: two fit, three do not
                        tg.start_soon(_append_expecting_failure, sink, 3000.0 + i, failures)
            assert failures.count("the audit queue is full") == 3 and len(failures) == 5
            assert sink.stats.queue_full == 3
            proxy.stalled = False


async def _append_expecting_failure(sink: PostgresAuditSink, timestamp: float, failures: list[str]) -> None:
    with pytest.raises(AuditUnavailable) as info:
        await sink.append(make_record(timestamp=timestamp))
    failures.append(str(info.value))
