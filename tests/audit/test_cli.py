from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import mcp_gateway
from mcp_gateway.audit.cli import add_commands, main
from mcp_gateway.audit.query import CONTRACT_FIELDS, OUTPUT_FIELDS
from mcp_gateway.audit.record import outcome_of

from .conftest import BASE_TIME, make_record, write_records

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    intent = make_record(
        timestamp=BASE_TIME,
        agent_id="an-agent-with-a-rather-long-identifier-0123456789",
        request_context='=HYPERLINK("http://evil")',
        tool="echo\x1b[2J\u202e",
    )
    records = [
        intent,
        outcome_of(intent, outcome="ok", timestamp=BASE_TIME + 0.25, http_status=200, latency_ms=250.0),
        make_record(timestamp=BASE_TIME + 60, agent_id="agent-8", tool="delete_everything", decision="deny"),
        make_record(timestamp=BASE_TIME + 120, agent_id="agent-9", delegating_user="bob", tool="search"),
    ]
    await write_records(path, records)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_commands_wires_every_audit_command_to_a_function() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    for command in ("query", "verify", "export"):
        args = parser.parse_args(["audit", command, "--database", "x.db"])
        assert callable(args.func) and args.config == "./gateway.toml"


def test_audit_without_a_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2 and "query" in err


async def test_query_json_prints_one_contract_object_per_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "--database", str(db), "--format", "json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    assert list(rows[0])[: len(CONTRACT_FIELDS)] == list(CONTRACT_FIELDS)
    assert (rows[0]["outcome"], rows[0]["latency_ms"], rows[1]["outcome"]) == ("ok", 250.0, "aborted")
    assert rows[0]["scope_granted"] == ["tools:call", "tools:read"]
    assert out.isascii()  # client-chosen control characters arrive escaped, never raw


async def test_query_filters_and_limits_from_the_command_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def agents(*argv: str) -> list[str]:
        code, out, _ = run(capsys, "query", "--database", str(db), "--format", "json", *argv)
        assert code == 0
        return [json.loads(line)["agent_id"] for line in out.splitlines()]

    assert agents("--agent", "agent-8") == ["agent-8"]
    assert agents("--user", "bob") == ["agent-9"]
    assert agents("--decision", "deny") == ["agent-8"]
    assert agents("--outcome", "aborted", "--tool", "search") == ["agent-9"]
    assert agents("--server", "everything", "--session", "sess-1", "--limit", "2") == ["agent-8", "agent-9"]
    assert agents("--since", "2026-11-28T12:01:00Z", "--until", "2026-11-28T12:02:00Z") == ["agent-8"]
    assert len(agents("--since", "1000w")) == 3
    assert len(agents("--since", "2026-11-28")) == 3


async def test_query_csv_has_a_header_and_defuses_formulas(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "--database", str(db), "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(OUTPUT_FIELDS)
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["request_context"] == '\'=HYPERLINK("http://evil")'
    assert first["scope_granted"] == "tools:call tools:read"
    assert first["http_status"] == "200" and first["token_ttl"] == "1800" and first["session_id"] == "sess-1"
    assert first["event_type"] == ""


@pytest.mark.parametrize("columns", [80, 100, 120, 200])
async def test_query_table_fits_the_terminal_and_cannot_drive_it(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = run(capsys, "query", "--database", str(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "AGENT", "USER"]
    assert len(lines) == 4 and "(3 rows)" in err
    assert max(len(line) for line in lines) <= min(columns, 120)
    assert "\x1b" not in out and "\u202e" not in out
    assert "…" in lines[1]  # the long agent id, shortened
    assert "aborted" in lines[2] and "delete_ev" in lines[2]
    if columns >= 100:
        assert "2026-11-28T12:00:00.000Z" in lines[1] and "250.0" in lines[1] and "200" in lines[1]
    else:
        assert lines[1].startswith("2026-11-28 12:00:00 ")


async def test_the_database_is_found_through_the_config_even_when_the_allowlist_is_broken(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "conf" / "gateway.toml"
    config.parent.mkdir()
    config.write_text('allowlist = "missing.toml"\n[audit]\ndatabase = "../audit.db"\n')
    code, out, _ = run(capsys, "verify", "--config", str(config))
    assert code == 0 and "intact: 4 records" in out
    monkeypatch.chdir(tmp_path / "conf")
    assert run(capsys, "verify")[0] == 0  # default ./gateway.toml


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (None, "no config file"),
        ("[audit\n", "cannot read"),
        ("[audit]\ndatabase = 3\n", "audit.database"),
        ("[audit]\n", "no audit database"),
    ],
)
async def test_config_problems_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str | None, message: str
) -> None:
    config = tmp_path / "gateway.toml"
    if config_text is not None:
        config.write_text(config_text)
    for command in ("query", "verify", "export"):
        code, _, err = run(capsys, command, "--config", str(config))
        assert code == 2 and message in err


async def test_bad_arguments_exit_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "query", "--database", str(db), "--since", "yesterday")[0] == 2
    assert run(capsys, "query", "--database", str(db), "--limit", "-1")[0] == 2
    assert run(capsys, "export", "--database", str(db), "--after", "unknown")[0] == 2


async def test_verify_exits_0_intact_1_broken_2_missing(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "verify", "--database", str(db))
    assert code == 0 and "intact: 4 records; head seq 4 hash " in out
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_records SET record = json_set(record, '$.tool', 'other') WHERE seq = 2")
    code, out, _ = run(capsys, "verify", "--database", str(db))
    assert code == 1
    assert "BROKEN at seq 2" in out and "last intact record: seq 1" in out
    assert run(capsys, "verify", "--database", str(tmp_path / "missing.db"))[0] == 2
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    code, _, err = run(capsys, "verify", "--database", str(garbage))
    assert code == 2 and "error" in err


async def test_query_and_export_of_a_record_that_no_longer_parses_exit_2_pointing_at_verify(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_records SET record = 'not json' WHERE seq = 1")
    for command in ("query", "export"):
        code, _, err = run(capsys, command, "--database", str(db))
        assert code == 2
        # query's filters read the JSON in SQLite, which refuses it; export parses it itself.
        assert ("cannot be read" in err or "malformed JSON" in err) and "audit verify" in err, err


async def test_export_is_resumable_and_appends_to_its_output_file(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "export", "--database", str(db))
    assert code == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4]
    assert "resume with --after-seq 4" in err
    target = tmp_path / "siem.jsonl"
    assert run(capsys, "export", "--database", str(db), "--after-seq", "2", "--output", str(target))[0] == 0
    first_id = json.loads(out.splitlines()[0])["event_id"]
    assert run(capsys, "export", "--database", str(db), "--after", first_id, "--output", str(target))[0] == 0
    assert [json.loads(line)["seq"] for line in target.read_text().splitlines()] == [3, 4, 2, 3, 4]


async def test_a_reader_that_stops_early_gets_a_quiet_exit(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    await write_records(db, [make_record(timestamp=BASE_TIME + i, request_context="x" * 500) for i in range(400)])
    root = str(Path(mcp_gateway.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [
        sys.executable,
        "-m",
        "mcp_gateway.audit.cli",
        "audit",
        "query",
        "--database",
        str(db),
        "--format",
        "json",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["request_context"] == "x" * 500
        proc.stdout.close()  # like `| head -1`
        with anyio.fail_after(10):
            code = await anyio.to_thread.run_sync(proc.wait)
        assert (code, proc.stderr.read()) == (0, b"")
