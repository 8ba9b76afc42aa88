"""Records edited, deleted or reordered by hand in the SQLite file after real gateway traffic:
`mcp-gateway audit verify` exits non-zero and names the first broken link, for each."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.audit.canonical import canonical_record_bytes, chain_hash
from mcp_gateway.audit.sqlite.schema import ROW_COLUMNS, parse_record
from tests._stack import gateway_stack
from tests.e2e._audit_support import call_tool, run_cli

pytestmark = pytest.mark.anyio

# Edits the file; returns the seq verify must name as broken, or (that seq, the last intact seq) when
# the last intact record is not the one just before it.
Tamper = Callable[[sqlite3.Connection], int | tuple[int, int]]
BROKEN = re.compile(r"audit log BROKEN at seq (\d+): (.*)")


@pytest.fixture(scope="module")
async def pristine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Path]:
    """An audit database written by a real gateway: allowed calls, a step-up refusal, a 401, a denial."""
    directory = tmp_path_factory.mktemp("pristine")
    async with gateway_stack(directory) as stack:
        reader, admin = stack.token(["tools:read"]), stack.token(["tools:read", "admin"])
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(timeout=10) as http:
                for i in range(3):
                    assert (await call_tool(http, stack.mcp_url(), reader, "echo", {"message": f"m{i}"})).is_success
                assert (await call_tool(http, stack.mcp_url(), reader, "delete_everything", {})).status_code == 403
                assert (await call_tool(http, stack.mcp_url(), admin, "delete_everything", {})).is_success
                assert (await call_tool(http, stack.mcp_url(), None, "echo", {"message": "anon"})).status_code == 401
    assert not (directory / "audit.db-wal").exists() or (directory / "audit.db-wal").stat().st_size == 0
    yield directory / "audit.db"


def _rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM audit_records ORDER BY seq").fetchall()


def _seq_of(conn: sqlite3.Connection, where: str) -> int:
    row = conn.execute(f"SELECT min(seq) FROM audit_fields WHERE {where}").fetchone()
    assert row[0] is not None and row[0] > 1
    return int(row[0])


def rewrite_a_refusal_as_allowed(conn: sqlite3.Connection) -> int:
    seq = _seq_of(conn, "decision = 'step_up'")
    conn.execute(
        "UPDATE audit_records SET record = json_set(record, '$.decision', 'allow', '$.http_status', 200) WHERE seq = ?",
        (seq,),
    )
    return seq


def change_the_agent_and_rehash_the_record(conn: sqlite3.Connection) -> int:
    # An editor who knows the hash algorithm fixes the edited record's own hash: the next link breaks.
    seq = _seq_of(conn, "tool = 'delete_everything' AND decision = 'allow'")
    conn.execute("UPDATE audit_records SET record = json_set(record, '$.agent_id', 'agent-b') WHERE seq = ?", (seq,))
    row = next(r for r in _rows(conn) if r[0] == seq)
    record, prev_hash = parse_record(str(row[ROW_COLUMNS.index("record")]))
    canonical = canonical_record_bytes(record, prev_hash).decode()
    rehashed = chain_hash(prev_hash, record)
    conn.execute("UPDATE audit_records SET record = ?, hash = ? WHERE seq = ?", (canonical, rehashed, seq))
    return seq + 1


def shift_a_timestamp_by_a_millisecond(conn: sqlite3.Connection) -> int:
    seq = _seq_of(conn, "phase = 'outcome'")
    conn.execute("UPDATE audit_records SET timestamp = timestamp + 0.001 WHERE seq = ?", (seq,))
    return seq


def delete_a_record_in_the_middle(conn: sqlite3.Connection) -> tuple[int, int]:
    seq = _seq_of(conn, "decision = 'step_up'")
    conn.execute("DELETE FROM audit_records WHERE seq = ?", (seq,))
    return seq + 1, seq - 1


def delete_a_record_and_renumber_the_rest(conn: sqlite3.Connection) -> int:
    seq = _seq_of(conn, "decision = 'step_up'")
    conn.execute("DELETE FROM audit_records WHERE seq = ?", (seq,))
    for (later,) in conn.execute("SELECT seq FROM audit_records WHERE seq > ? ORDER BY seq", (seq,)).fetchall():
        conn.execute("UPDATE audit_records SET seq = ? WHERE seq = ?", (later - 1, later))
    return seq


def delete_the_last_record(conn: sqlite3.Connection) -> int:
    (last,) = conn.execute("SELECT max(seq) FROM audit_records").fetchone()
    conn.execute("DELETE FROM audit_records WHERE seq = ?", (last,))
    return int(last)


def swap_two_records(conn: sqlite3.Connection) -> int:
    first = _seq_of(conn, "decision = 'step_up'")
    rows = {row[0]: row for row in _rows(conn)}
    columns = ROW_COLUMNS[1:]
    assignments = ", ".join(f"{name} = ?" for name in columns)
    for target, source in ((first, first + 1), (first + 1, first)):
        conn.execute(f"UPDATE audit_records SET {assignments} WHERE seq = ?", (*rows[source][1:], target))
    return first


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (rewrite_a_refusal_as_allowed, "edited"),
        (change_the_agent_and_rehash_the_record, "prev_hash does not match"),
        (shift_a_timestamp_by_a_millisecond, "edited"),
        (delete_a_record_in_the_middle, "1 record(s) deleted"),
        (delete_a_record_and_renumber_the_rest, "prev_hash does not match"),
        (delete_the_last_record, "removed from the end"),
        (swap_two_records, "reordered"),
    ],
)
async def test_audit_verify_names_the_first_broken_link_after_hand_tampering(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Tamper, reason: str
) -> None:
    database = tmp_path / "audit.db"
    shutil.copyfile(pristine, database)
    assert run_cli(capsys, "audit", "verify", "--database", str(database))[0] == 0
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN")
        expected = tamper(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    code, out = run_cli(capsys, "audit", "verify", "--database", str(database))
    assert code == 1, out
    match = BROKEN.search(out)
    assert match is not None, out
    broken, intact = expected if isinstance(expected, tuple) else (expected, expected - 1)
    assert int(match.group(1)) == broken
    assert reason in match.group(2)
    assert f"last intact record: seq {intact} " in out
