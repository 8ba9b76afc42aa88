"""Audit exports and terminal output are safe to open (SECURITY.md), checked byte by byte on real logs.

Hostile values go in through the real SQLite sink, in every field a client or a token can choose; the
real `mcp-gateway` process prints them, and its stdout bytes are compared exactly.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from pathlib import Path

import anyio
import pytest

import mcp_gateway
from mcp_gateway.audit.cli import main

from .conftest import BASE_TIME, make_record, write_records

pytestmark = pytest.mark.anyio

_EVENT_ID = "01a22206-ca00-7000-8000-000000000001"
_HOSTILE = {
    "agent_id": "-2+3",
    "delegating_user": "\tbob",
    "session_id": "@SUM(1)",
    "mcp_server": "\uff1d1+1",
    "tool": "echo\x1b]0;pwned\x07\u202egnp.exe",
    "scope_granted": ("=cmd|' /C calc'!A0",),
    "token_id": "a\x00b\x85c\u2028d\x7f",
    "request_context": "ok\r=cmd|' /C calc'!A0",  # a lone CR used to end the CSV record here
    "policy_rule": 'x,y"z',
}
# The one data record `audit query --format csv` prints for the hostile record, byte for byte.
_CSV_RECORD = (
    b'"2026-11-28T12:00:00.000Z","01a22206-ca00-7000-8000-000000000001",'
    b'"\'-2+3","\'\\tbob","\'@SUM(1)","\'\xef\xbc\x9d1+1","tools/call",'
    b'"echo\\x1b]0;pwned\\x07\\u202egnp.exe",'
    b'"\'=cmd|\' /C calc\'!A0","tools:read",1800,'
    b'"a\\x00b\\x85c\\u2028d\\x7f",'
    b"\"ok\\r=cmd|' /C calc'!A0\","
    b'"allow","x,y""z","aborted",,,'
    b'"' + b"cd" * 32 + b'","' + b"ab" * 32 + b'","127.0.0.1","spki:abc"'
)  # then one empty cell per field the record leaves unset, and CRLF
# The table row for a hostile record whose fields fit their columns (120-column terminal).
_TABLE_FIELDS = {
    "agent_id": "\x9b31mroot",  # C1 CSI: an ANSI sequence in one byte pair
    "delegating_user": "\u2066eve",
    "mcp_server": "srv\x07",
    "tool": "\x1b[2J\u202eab",
}
_TABLE_ROW = (
    b"2026-11-28T12:00:01.000Z \\x9b31mroot  \\u2066eve    srv\\x07      \\x1b[2J\\u202eab   allow    aborted\n"
)


@pytest.fixture
async def hostile_db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    await write_records(
        path,
        [
            make_record(timestamp=BASE_TIME, event_id=_EVENT_ID, **_HOSTILE),
            make_record(timestamp=BASE_TIME + 1, event_id=_EVENT_ID[:-1] + "2", **_TABLE_FIELDS),
        ],
    )
    return path


async def mcp_gateway_process(*argv: str, columns: int = 120) -> bytes:
    root = str(Path(mcp_gateway.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "COLUMNS": str(columns)}
    with anyio.fail_after(30):
        done = await anyio.run_process([sys.executable, "-m", "mcp_gateway.cli", *argv], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    return done.stdout


def is_inert(text: str) -> bool:
    unsafe = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    return not any(unicodedata.category(ch) in unsafe for ch in text)


async def test_audit_csv_export_is_rfc_4180_with_formulas_neutralised_byte_by_byte(hostile_db: Path) -> None:
    out = await mcp_gateway_process("audit", "query", "--database", str(hostile_db), "--format", "csv")
    header, first, second, end = out.split(b"\r\n")
    assert header.startswith(b'"timestamp","event_id","agent_id",') and end == b""
    assert first.startswith(_CSV_RECORD)
    assert set(first[len(_CSV_RECORD) :]) <= {ord(",")}  # only the empty trailing cells
    assert second.startswith(b'"2026-11-28T12:00:01.000Z"')
    # Nothing but the record separators is a control byte: no lone CR or LF can start a forged row.
    assert out.count(b"\r") == out.count(b"\n") == 3
    assert not any((byte < 0x20 and byte not in b"\r\n") or byte == 0x7F for byte in out)
    assert is_inert(out.decode("utf-8").replace("\r\n", ""))


async def test_audit_table_shows_control_characters_as_visible_escapes_byte_by_byte(hostile_db: Path) -> None:
    out = await mcp_gateway_process("audit", "query", "--database", str(hostile_db), "--format", "table")
    header, first, second = out.splitlines(keepends=True)
    assert header.startswith(b"TIME ")
    assert second == _TABLE_ROW
    assert first.startswith(b"2026-11-28T12:00:00.000Z -2+3         \\tbob        \xef\xbc\x9d1+1         echo\\x1b]0;")
    assert out.count(b"\n") == 3 and b"\r" not in out
    assert not any((byte < 0x20 and byte != 0x0A) or byte == 0x7F for byte in out)
    assert is_inert(out.decode("utf-8").replace("\n", ""))


async def test_audit_json_lines_are_printable_ascii_and_lossless(
    hostile_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "query", "--database", str(hostile_db), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and all(0x20 <= ord(ch) < 0x7F for ch in out.replace("\n", ""))
    first = json.loads(out.splitlines()[0])
    assert {name: first[name] for name in _HOSTILE} == {
        name: list(value) if isinstance(value, tuple) else value for name, value in _HOSTILE.items()
    }
    assert '"tool": "echo\\u001b]0;pwned\\u0007\\u202egnp.exe"' in out
    assert '"token_id": "a\\u0000b\\u0085c\\u2028d\\u007f"' in out


async def test_audit_export_lines_are_printable_ascii_and_lossless(
    hostile_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", "--database", str(hostile_db)]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and all(0x20 <= ord(ch) < 0x7F for ch in out.replace("\n", ""))
    first = json.loads(out.splitlines()[0])
    assert (first["tool"], first["token_id"], first["request_context"]) == (
        _HOSTILE["tool"],
        _HOSTILE["token_id"],
        _HOSTILE["request_context"],
    )
