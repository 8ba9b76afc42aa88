from __future__ import annotations

import dataclasses
import json
import os
import selectors
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

import mcp_gateway
from mcp_gateway.audit.events import DISCONTINUITY_EVENT
from mcp_gateway.audit.record import GENESIS_HASH
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.errors import AuditUnavailable

from ..conftest import make_record
from ._log import query, verify

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def opened(path: Path, **options: object) -> AsyncIterator[SQLiteAuditSink]:
    sink = SQLiteAuditSink(path, **options)  # type: ignore[arg-type]
    with anyio.fail_after(10):
        await sink.start()
    try:
        yield sink
    finally:
        with anyio.fail_after(10):
            await sink.aclose()


def rows(path: Path) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, event_id, prev_hash, hash FROM audit_fields ORDER BY seq").fetchall()


async def test_appended_records_are_committed_chained_and_verifiable(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        assert sink.healthy
        records = [make_record(timestamp=1000.0 + i) for i in range(5)]
        with anyio.fail_after(10):
            for record in records:
                await sink.append(record)
        assert sink.head[0] == 5
    assert not sink.healthy
    stored = rows(db)
    assert [r[1] for r in stored] == [r.event_id for r in records]
    assert stored[0][2] == GENESIS_HASH
    assert all(stored[i][2] == stored[i - 1][3] for i in range(1, 5))
    result = verify(db)
    assert result.ok and result.records == 5 and result.head_hash == stored[-1][3]


async def test_the_database_file_is_private_to_the_gateway_user(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db):
        pass
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


async def test_concurrent_appends_share_commits_and_all_become_durable(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    records = [make_record(timestamp=1000.0 + i / 1000) for i in range(500)]
    async with opened(db) as sink:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                for record in records:
                    tg.start_soon(sink.append, record)
        stats = sink.stats
    assert stats.appended == 500
    assert stats.commits <= 50, stats  # group commit: one fsync serves many appends
    assert stats.largest_batch > 1
    assert {r[1] for r in rows(db)} == {r.event_id for r in records}
    assert verify(db).ok


async def test_one_commit_per_record_when_groups_are_disabled(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db", max_batch=1) as sink:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(sink.append, make_record(timestamp=1000.0 + i))
        assert (sink.stats.commits, sink.stats.largest_batch) == (20, 1)


async def test_nowait_records_are_written_by_the_next_flush(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        intent = make_record()
        with anyio.fail_after(10):
            await sink.append(intent)
            sink.append_nowait(dataclasses.replace(intent, phase="outcome", outcome="ok", http_status=200))
            await sink.flush()
        assert sink.stats.appended == 2
    assert [row["outcome"] for row in query(db)] == ["ok"]


async def test_a_restart_continues_the_chain_where_it_stopped(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        with anyio.fail_after(10):
            for i in range(3):
                await sink.append(make_record(timestamp=1000.0 + i))
        head = sink.head
    async with opened(db) as sink:
        assert sink.head == head
        with anyio.fail_after(10):
            await sink.append(make_record(timestamp=2000.0))
    stored = rows(db)
    assert [r[0] for r in stored] == [1, 2, 3, 4]
    assert stored[3][2] == head[1]
    assert verify(db).ok


async def test_two_writers_on_one_file_keep_a_single_chain(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as first, opened(db) as second:
        with anyio.fail_after(10):
            for i in range(6):
                await (first if i % 2 else second).append(make_record(timestamp=1000.0 + i))
    assert [r[0] for r in rows(db)] == [1, 2, 3, 4, 5, 6]
    assert verify(db).ok


def _fill_up(conn: sqlite3.Connection) -> None:
    # SQLITE_FULL without a small filesystem (CI runs as root, so chmod cannot make a file unwritable).
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


async def test_a_full_disk_fails_the_append_closed_and_keeps_the_chain_consistent(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    holder: list[sqlite3.Connection] = []

    def on_open(conn: sqlite3.Connection) -> None:
        _fill_up(conn)
        holder.append(conn)

    async with opened(db, on_open=on_open) as sink:
        small = make_record(timestamp=1000.0)
        with anyio.fail_after(10):
            await sink.append(small)  # fits in the table's existing page
            big = make_record(timestamp=1001.0, arguments="x" * 20_000)
            with pytest.raises(AuditUnavailable, match="full"):
                await sink.append(big)
            assert not sink.healthy
            sink.append_nowait(make_record(timestamp=1002.0, arguments="y" * 20_000))
            await sink.flush()
            stats = sink.stats
            assert (stats.failed_batches, stats.lost, stats.appended) == (2, 1, 1)
            # Space comes back: the next append succeeds and chains from the last durable record.
            holder[0].execute("PRAGMA max_page_count = 1000000")
            after = make_record(timestamp=1003.0)
            await sink.append(after)
        assert sink.healthy
    assert [r[1] for r in rows(db)] == [small.event_id, after.event_id]
    assert verify(db).ok


async def test_a_read_only_database_fails_appends_and_reports_unhealthy(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db, on_open=lambda conn: conn.execute("PRAGMA query_only = ON")) as sink:
        with anyio.fail_after(10), pytest.raises(AuditUnavailable, match="readonly"):
            await sink.append(make_record())
        assert not sink.healthy
    assert rows(db) == []


async def test_a_lock_held_too_long_by_another_process_fails_the_append(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db, busy_timeout_ms=50) as sink:
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with anyio.fail_after(10), pytest.raises(AuditUnavailable, match="locked"):
            await sink.append(make_record())
        blocker.execute("ROLLBACK")
        blocker.close()
        with anyio.fail_after(10):
            await sink.append(make_record())
        assert sink.healthy
    assert verify(db).records == 1


async def test_a_full_queue_refuses_appends_instead_of_growing(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db, max_queue=2, busy_timeout_ms=10_000) as sink:
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer stalls on its next batch, like a stalled disk
        for i in range(10):
            sink.append_nowait(make_record(timestamp=1000.0 + i))
        with pytest.raises(AuditUnavailable, match="queue is full"):
            await sink.append(make_record())
        blocker.execute("ROLLBACK")
        blocker.close()
        with anyio.fail_after(15):
            await sink.flush()
        stats = sink.stats
    assert stats.queue_full == 1
    assert stats.lost >= 7  # at most one batch was taken before the writer stalled, and two fit the queue
    assert stats.appended + stats.lost == 10
    assert verify(db).ok


async def test_a_record_that_cannot_be_encoded_fails_alone(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        good = [make_record(timestamp=1000.0 + i) for i in range(3)]
        bad = dataclasses.replace(make_record(), agent_id=42)  # type: ignore[arg-type]
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for record in good:
                    tg.start_soon(sink.append, record)

                async def append_bad() -> None:
                    with pytest.raises(AuditUnavailable, match="rejected"):
                        await sink.append(bad)

                tg.start_soon(append_bad)
        assert sink.healthy
        assert sink.stats.rejected == 1
    assert {r[1] for r in rows(db)} == {r.event_id for r in good}
    assert verify(db).ok


async def test_client_chosen_text_is_stored_even_with_lone_surrogates_and_nul(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        with anyio.fail_after(10):
            await sink.append(
                make_record(tool="evil\ud800", request_context="a\x00b\u202e", scope_granted=('q"\\', "é\n"))
            )
    (row,) = query(db)
    assert (row["tool"], row["request_context"]) == ("evil\\ud800", "a\x00b\u202e")
    assert row["scope_granted"] == ['q"\\', "é\n"]
    assert verify(db).ok


async def test_a_sink_that_is_not_running_refuses_appends(tmp_path: Path) -> None:
    sink = SQLiteAuditSink(tmp_path / "audit.db")
    with pytest.raises(AuditUnavailable):
        await sink.append(make_record())
    assert not sink.healthy
    await sink.aclose()  # closing a sink that never started is harmless
    async with opened(tmp_path / "audit.db") as sink:
        pass
    with pytest.raises(AuditUnavailable):
        await sink.append(make_record())
    sink.append_nowait(make_record())
    assert sink.stats.lost == 1
    with pytest.raises(RuntimeError):
        await sink.start()


async def test_a_cancelled_waiter_does_not_disturb_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        with anyio.move_on_after(0):
            await sink.append(make_record(timestamp=1000.0))
        with anyio.fail_after(10):
            await sink.append(make_record(timestamp=1001.0))
        assert sink.healthy
    assert len(rows(db)) == 2


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)", "schema_version"),
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema_version', '99')",
            "newer",
        ),
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema_version', '1')",
            "development build.*move it aside",
        ),
    ],
)
async def test_a_database_this_version_does_not_understand_is_refused(tmp_path: Path, setup: str, match: str) -> None:
    db = tmp_path / "audit.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(setup)
    sink = SQLiteAuditSink(db)
    with anyio.fail_after(10), pytest.raises(AuditUnavailable, match=match):
        await sink.start()
    assert not sink.healthy


async def test_an_unopenable_path_is_refused_at_start(tmp_path: Path) -> None:
    with anyio.fail_after(10), pytest.raises(AuditUnavailable, match="cannot open"):
        await SQLiteAuditSink(tmp_path / "missing-dir" / "audit.db").start()


async def test_a_truncated_tail_stays_detectable_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db) as sink:
        with anyio.fail_after(10):
            for i in range(4):
                await sink.append(make_record(timestamp=1000.0 + i))
    head_hash = sink.head[1]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq >= 3")
    async with opened(db) as sink:
        assert sink.head[0] == 4  # continues after the checkpoint, not after the shortened table
        with anyio.fail_after(10):
            await sink.append(make_record(timestamp=2000.0))
    events = [r for r in query(db) if r["event_type"] == DISCONTINUITY_EVENT]
    assert len(events) == 1
    assert json.loads(events[0]["detail"]) == {
        "head_seq": 4,
        "head_hash": head_hash,
        "tail_seq": 2,
        "tail_hash": rows(db)[1][3],
    }
    result = verify(db)
    assert not result.ok and result.broken_seq == 5 and "deleted" in (result.reason or "")


_WRITER = """
import asyncio, sys, time
from mcp_gateway.audit.record import AuditRecord, new_event_id
from mcp_gateway.audit.sqlite import SQLiteAuditSink

async def main(path):
    sink = SQLiteAuditSink(path)
    await sink.start()

    async def worker(n):
        while True:
            now = time.time()
            record = AuditRecord(phase="intent", timestamp=now, event_id=new_event_id(now), agent_id=f"w{n}")
            await sink.append(record)
            sys.stdout.write(record.event_id + "\\n")  # only once the record is durable
            sys.stdout.flush()

    await asyncio.gather(*(worker(n) for n in range(8)))

asyncio.run(main(sys.argv[1]))
"""


def _read_ids(proc: subprocess.Popen[bytes], wanted: int, deadline: float) -> list[str]:
    assert proc.stdout is not None
    ids: list[str] = []
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(ids) < wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"writer printed only {len(ids)} ids before the deadline")
            if not selector.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"writer exited early with {proc.wait()}")
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            ids.extend(line.decode() for line in lines)
    return ids


async def test_records_acknowledged_before_a_sigkill_survive_it(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    root = str(Path(mcp_gateway.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, env=env) as proc:
        try:
            printed = _read_ids(proc, 300, time.monotonic() + 15)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.stdout is not None
            rest = proc.stdout.read().decode()  # whatever was acknowledged before the kill
        finally:
            proc.kill()
        assert proc.wait() == -signal.SIGKILL
    printed += [line for line in rest.split("\n") if len(line) == 36]
    result = verify(db)
    assert result.ok, result
    stored = {r[1] for r in rows(db)}
    assert set(printed) <= stored
    async with opened(db) as sink:  # and the chain goes on from there
        assert sink.head == (result.head_seq, result.head_hash)
        with anyio.fail_after(10):
            await sink.append(make_record())
    assert verify(db).ok


async def test_an_outcome_does_not_wake_the_writer_and_shares_the_next_intents_commit(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db", nowait_delay_seconds=60, commit_interval_seconds=0) as sink:
        first = make_record(timestamp=1000.0)
        with anyio.fail_after(10):
            await sink.append(first)
            sink.append_nowait(dataclasses.replace(first, phase="outcome", outcome="ok", http_status=200))
            await sink.append(make_record(timestamp=1001.0))
        assert (sink.stats.appended, sink.stats.commits) == (3, 2)
    assert verify(tmp_path / "audit.db").records == 3


async def test_a_record_nobody_waits_for_is_written_within_the_nowait_delay(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db", nowait_delay_seconds=0.05) as sink:
        sink.append_nowait(make_record("event", event_type="probe"))
        with anyio.fail_after(5):
            while sink.stats.appended < 1:  # no flush, no append: only the writer's own timer
                await anyio.sleep(0.01)
    assert len(rows(tmp_path / "audit.db")) == 1


async def test_closing_writes_what_nobody_waited_for(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db", nowait_delay_seconds=60) as sink:
        for i in range(3):
            sink.append_nowait(make_record("event", timestamp=1000.0 + i, event_type="probe"))
    assert sink.stats.appended == 3
    assert verify(tmp_path / "audit.db").records == 3


@pytest.mark.parametrize(("mode", "pragma"), [("full", 2), ("normal", 1)])
async def test_the_synchronous_mode_is_sqlites(tmp_path: Path, mode: str, pragma: int) -> None:
    seen: list[int] = []
    async with opened(
        tmp_path / "audit.db",
        synchronous=mode,
        on_open=lambda c: seen.append(c.execute("PRAGMA synchronous").fetchone()[0]),
    ) as sink:
        assert sink.synchronous == mode
    assert seen == [pragma]
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteAuditSink(tmp_path / "audit.db", synchronous="off")


async def test_a_record_too_big_for_the_space_left_fails_alone_not_with_its_group(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with opened(db, on_open=_fill_up, nowait_delay_seconds=60) as sink:
        small, other = make_record(timestamp=1000.0), make_record(timestamp=1001.0)
        sink.append_nowait(make_record(timestamp=999.0, arguments="x" * 20_000))
        sink.append_nowait(small)
        with anyio.fail_after(10):
            await sink.append(other)  # wakes the writer: all three are one group, which cannot be written
        stats = sink.stats
    assert (stats.appended, stats.lost, stats.failed_batches) == (2, 1, 1)
    assert [r[1] for r in rows(db)] == [small.event_id, other.event_id]
    assert verify(db).ok


async def test_while_calls_are_in_flight_intents_are_held_to_share_a_commit(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db", commit_interval_seconds=1.0, nowait_delay_seconds=60) as sink:
        with anyio.fail_after(10):
            await sink.append(make_record(timestamp=1000.0))  # a call now in flight: no outcome yet
            async with anyio.create_task_group() as tg:
                tg.start_soon(sink.append, make_record(timestamp=1001.0))
                await anyio.sleep(0.1)  # the writer already holds the first intent by now
                tg.start_soon(sink.append, make_record(timestamp=1002.0))
        assert (sink.stats.appended, sink.stats.commits) == (3, 2)


async def test_a_call_made_while_no_other_is_in_flight_is_not_held(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db", commit_interval_seconds=60, nowait_delay_seconds=60) as sink:
        first = make_record(timestamp=1000.0)
        with anyio.fail_after(10):  # far less than the interval
            await sink.append(first)
            sink.append_nowait(dataclasses.replace(first, phase="outcome", outcome="ok", http_status=200))
            await sink.append(make_record(timestamp=1001.0))
        assert sink.stats.commits == 2


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
async def test_the_writer_thread_does_not_preempt_the_event_loop_when_it_wakes(tmp_path: Path) -> None:
    async with opened(tmp_path / "audit.db"):
        (writer,) = [t for t in threading.enumerate() if t.name == "audit-writer:audit.db"]
        assert writer.native_id is not None
        assert os.sched_getscheduler(writer.native_id) == os.SCHED_BATCH
