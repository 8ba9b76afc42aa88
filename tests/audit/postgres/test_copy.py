"""`audit copy --from sqlite:PATH --to postgresql://…`: an embedded log moved into the shared store, verifiably."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from mcp_gateway.audit.cli import main
from mcp_gateway.audit.postgres import PostgresAuditReader
from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.sqlite import SQLiteAuditReader, SQLiteAuditSink

from ..conftest import BASE_TIME, make_record
from ._pg import fetch, opened

pytestmark = pytest.mark.anyio


async def write_sqlite(path: Path, records: list[AuditRecord]) -> None:
    sink = SQLiteAuditSink(path)
    with anyio.fail_after(10):
        await sink.start()
        for record in records:
            await sink.append(record)
        await sink.aclose()


def copy(path: Path, url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["audit", "copy", "--from", f"sqlite:{path}", "--to", url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_a_copied_log_verifies_with_its_original_hashes_beside_a_live_chain(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    await write_sqlite(db, [make_record(timestamp=BASE_TIME + i) for i in range(5)])
    async with opened(pg_url) as live:
        await live.append(make_record(timestamp=BASE_TIME + 100))
    code, out, _ = copy(db, pg_url, capsys)
    assert code == 0 and out.startswith("copied 5 records into chain sqlite-")
    original = SQLiteAuditReader(db).verify()
    result = PostgresAuditReader(pg_url).verify()
    assert result.ok and result.records == 6 and result.chains is not None
    copied = next(v.result for v in result.chains if v.chain_id.startswith("sqlite-"))
    assert (copied.records, copied.head_seq, copied.head_hash) == (5, original.head_seq, original.head_hash)
    sqlite_rows = sqlite3.connect(db).execute("SELECT seq, hash FROM audit_records ORDER BY seq").fetchall()
    pg_rows = await fetch(pg_url, "SELECT seq, hash FROM audit_records WHERE chain_id LIKE 'sqlite-%' ORDER BY seq")
    assert pg_rows == sqlite_rows
    rows = list(PostgresAuditReader(pg_url).query())
    assert len(rows) == 6 and [r["event_id"] for r in rows[:5]] == [
        r["event_id"] for r in SQLiteAuditReader(db).query()
    ]


async def test_copying_again_copies_only_what_the_source_gained(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    await write_sqlite(db, [make_record(timestamp=BASE_TIME + i) for i in range(3)])
    assert copy(db, pg_url, capsys)[0] == 0
    code, out, _ = copy(db, pg_url, capsys)
    assert code == 0 and "nothing to copy" in out and "all 3 records" in out
    await write_sqlite(db, [make_record(timestamp=BASE_TIME + 10 + i) for i in range(2)])  # the gateway went on
    code, out, _ = copy(db, pg_url, capsys)
    assert code == 0 and out.startswith("copied 2 records") and "holds 5 records" in out
    assert PostgresAuditReader(pg_url).verify().ok
    assert len(await fetch(pg_url, "SELECT 1 FROM audit_records")) == 5


async def test_a_source_that_does_not_verify_is_refused_and_nothing_is_copied(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    await write_sqlite(db, [make_record(timestamp=BASE_TIME + i) for i in range(3)])
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 2")
    code, _, err = copy(db, pg_url, capsys)
    assert code == 2 and "does not verify" in err and "seq 3" in err
    async with opened(pg_url):
        pass
    assert await fetch(pg_url, "SELECT 1 FROM audit_records") == []


async def test_a_target_chain_that_is_not_a_copy_of_the_source_is_refused(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    await write_sqlite(db, [make_record(timestamp=BASE_TIME + i) for i in range(3)])
    assert copy(db, pg_url, capsys)[0] == 0
    await fetch(pg_url, "UPDATE audit_chains SET head_hash = 'ff' WHERE chain_id LIKE 'sqlite-%'")
    code, _, err = copy(db, pg_url, capsys)
    assert code == 2 and "is not a copy of this file" in err


def test_copy_names_its_source_as_sqlite_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "copy", "--from", str(tmp_path / "a.db"), "--to", "postgresql://x/y"]) == 2
    assert "--from must be sqlite:PATH" in capsys.readouterr().err
    assert main(["audit", "copy", "--from", f"sqlite:{tmp_path / 'a.db'}", "--to", "postgresql://x/y"]) == 2
    assert "no audit database at" in capsys.readouterr().err
