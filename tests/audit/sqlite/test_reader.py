from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mcp_gateway.audit.canonical import canonical_record_bytes, chain_hash
from mcp_gateway.audit.chain import parse_record
from mcp_gateway.audit.query import CONTRACT_FIELDS, OUTPUT_FIELDS, QueryFilters
from mcp_gateway.audit.record import RECORD_FIELDS, AuditRecord, outcome_of

from ..conftest import BASE_TIME, make_record, write_records
from ._log import export, query, verify

pytestmark = pytest.mark.anyio


def call(t: float, outcome: str | None = "ok", **fields: Any) -> list[AuditRecord]:
    intent = make_record(timestamp=t, **fields)
    if outcome is None:
        return [intent]
    return [intent, outcome_of(intent, outcome=outcome, timestamp=t + 0.5, http_status=200, latency_ms=500.0)]


@pytest.fixture
async def log(tmp_path: Path) -> Path:
    db = tmp_path / "audit.db"
    records = [
        *call(BASE_TIME),
        *call(BASE_TIME + 60, outcome=None, agent_id="agent-8", tool="delete_everything"),  # killed mid-call
        make_record(  # a refusal is one record: an outcome without an intent
            "outcome",
            timestamp=BASE_TIME + 120,
            decision="step_up",
            outcome="denied",
            http_status=403,
            scopes_required=("admin",),
            tool="delete_everything",
        ),
        make_record(
            "event",
            timestamp=BASE_TIME + 180,
            event_type="tool_quarantined",
            agent_id=None,
            delegating_user=None,
            decision=None,
            detail='{"old":"aa","new":"bb"}',
        ),
        *call(BASE_TIME + 240, delegating_user="bob@example.com", mcp_server="files", session_id="sess-2"),
    ]
    await write_records(db, records)
    return db


async def test_rows_merge_intent_and_outcome_into_one_row_per_call(log: Path) -> None:
    rows = list(query(log))
    assert [row["outcome"] for row in rows] == ["ok", "aborted", "denied", None, "ok"]
    first = rows[0]
    assert list(first)[: len(CONTRACT_FIELDS)] == list(CONTRACT_FIELDS)
    assert list(first) == list(OUTPUT_FIELDS)
    assert first["timestamp"] == "2026-11-28T12:00:00.000Z"  # the call's start, from the intent
    assert (first["http_status"], first["latency_ms"]) == (200, 500.0)
    assert first["scope_granted"] == ["tools:call", "tools:read"]
    assert first["scopes_required"] == ["tools:read"]
    assert (rows[1]["http_status"], rows[1]["latency_ms"]) == (None, None)
    assert rows[2]["decision"] == "step_up" and rows[2]["scopes_required"] == ["admin"]
    assert rows[3]["event_type"] == "tool_quarantined"


async def test_integral_latencies_and_timestamps_come_back_as_floats(tmp_path: Path) -> None:
    # RFC 8785 writes 2.0 as 2; the reader must still give the float fields their type, or consumers
    # (and `--format json`) see 2 one time and 2.5 the next.
    db = tmp_path / "audit.db"
    intent = make_record(timestamp=float(int(BASE_TIME)))
    await write_records(db, [intent, outcome_of(intent, outcome="ok", timestamp=intent.timestamp, latency_ms=2.0)])
    (row,) = query(db)
    assert type(row["latency_ms"]) is float and row["latency_ms"] == 2.0
    with sqlite3.connect(db) as conn:
        texts = [text for (text,) in conn.execute("SELECT record FROM audit_records ORDER BY seq")]
    assert '"latency_ms":2,' in texts[1]  # stored canonically, without a fraction
    records = [parse_record(text)[0] for text in texts]
    assert all(type(r.timestamp) is float for r in records)
    assert type(records[1].latency_ms) is float
    assert verify(db).ok


async def test_an_outcome_row_prefers_the_outcomes_result_fields(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    intent = make_record(decision="allow", detail=None)
    outcome = outcome_of(intent, outcome="upstream_error", timestamp=BASE_TIME + 1, http_status=502, detail='{"e":1}')
    await write_records(db, [intent, outcome, dataclasses.replace(outcome, outcome="duplicate")])
    (row,) = query(db)
    assert (row["outcome"], row["http_status"], row["detail"]) == ("upstream_error", 502, '{"e":1}')


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (QueryFilters(agent="agent-8"), ["aborted"]),
        (QueryFilters(user="bob@example.com"), ["ok"]),
        (QueryFilters(server="files"), ["ok"]),
        (QueryFilters(tool="delete_everything"), ["aborted", "denied"]),
        (QueryFilters(decision="step_up"), ["denied"]),
        (QueryFilters(outcome="aborted"), ["aborted"]),
        (QueryFilters(session="sess-2"), ["ok"]),
        (QueryFilters(since=BASE_TIME + 60, until=BASE_TIME + 180), ["aborted", "denied"]),
        (QueryFilters(limit=2), [None, "ok"]),
        (QueryFilters(tool="delete_everything", limit=1), ["denied"]),
        (QueryFilters(agent="nobody"), []),
    ],
)
async def test_filters_select_rows(log: Path, filters: QueryFilters, expected: list[str | None]) -> None:
    assert [row["outcome"] for row in query(log, filters)] == expected


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(query(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()


# -- verify ------------------------------------------------------------------------------------


def tamper(db: Path, *statements: str) -> None:
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)


async def test_verify_accepts_an_untouched_log_and_reports_its_head(log: Path) -> None:
    result = verify(log)
    assert result.ok and result.records == 7 and result.head_seq == 7
    with sqlite3.connect(log) as conn:
        assert result.head_hash == conn.execute("SELECT hash FROM audit_records WHERE seq = 7").fetchone()[0]


async def test_verify_finds_an_edited_field(log: Path) -> None:
    tamper(log, "UPDATE audit_records SET record = json_set(record, '$.delegating_user', 'mallory') WHERE seq = 3")
    result = verify(log)
    assert (result.ok, result.broken_seq, result.head_seq) == (False, 3, 2)
    assert "edited" in (result.reason or "")


@pytest.mark.parametrize(
    "assignment", ["event_id = 'another'", "phase = 'event'", "timestamp = timestamp + 1", "hash = upper(hash)"]
)
async def test_verify_finds_an_edited_column_beside_the_record(log: Path, assignment: str) -> None:
    tamper(log, f"UPDATE audit_records SET {assignment} WHERE seq = 3")
    result = verify(log)
    assert (result.ok, result.broken_seq) == (False, 3)
    assert "edited" in (result.reason or "")


async def test_verify_finds_a_record_rewritten_in_another_json_spelling(log: Path) -> None:
    # Same members and values, so json_extract and a naive reader see no change; the hash is recomputed too.
    with sqlite3.connect(log) as conn:
        (text,) = conn.execute("SELECT record FROM audit_records WHERE seq = 3").fetchone()
        spaced = json.dumps(json.loads(text), sort_keys=True)
        conn.execute(
            "UPDATE audit_records SET record = ?, hash = ? WHERE seq = 3",
            (spaced, hashlib.sha256(spaced.encode()).hexdigest()),
        )
    result = verify(log)
    assert (result.ok, result.broken_seq) == (False, 3)
    assert "canonical" in (result.reason or "")


async def test_verify_finds_an_edit_whose_hash_was_recomputed_at_the_next_link(log: Path) -> None:
    with sqlite3.connect(log) as conn:
        (text,) = conn.execute("SELECT record FROM audit_records WHERE seq = 3").fetchone()
        original, prev_hash = parse_record(text)
        record = dataclasses.replace(original, delegating_user="mallory")
        forged = canonical_record_bytes(record, prev_hash)
        conn.execute(
            "UPDATE audit_records SET record = ?, hash = ? WHERE seq = 3",
            (forged.decode(), chain_hash(prev_hash, record)),
        )
    result = verify(log)
    assert (result.ok, result.broken_seq) == (False, 4)
    assert "prev_hash" in (result.reason or "")


async def test_verify_finds_a_deleted_record(log: Path) -> None:
    tamper(log, "DELETE FROM audit_records WHERE seq = 4")
    result = verify(log)
    assert (result.ok, result.broken_seq) == (False, 5)
    assert "deleted" in (result.reason or "")


async def test_verify_finds_a_deleted_first_record(log: Path) -> None:
    tamper(log, "DELETE FROM audit_records WHERE seq = 1")
    assert verify(log).broken_seq == 2


async def test_verify_finds_a_deleted_and_renumbered_record(log: Path) -> None:
    tamper(log, "DELETE FROM audit_records WHERE seq = 4", "UPDATE audit_records SET seq = seq - 1 WHERE seq > 4")
    result = verify(log)
    assert (result.ok, result.broken_seq) == (False, 4)
    assert "reordered" in (result.reason or "")


async def test_verify_finds_reordered_records(log: Path) -> None:
    columns = ["event_id", "phase", "timestamp", "record", "hash"]
    with sqlite3.connect(log) as conn:
        a = conn.execute(f"SELECT {', '.join(columns)} FROM audit_records WHERE seq = 2").fetchone()
        b = conn.execute(f"SELECT {', '.join(columns)} FROM audit_records WHERE seq = 3").fetchone()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE audit_records SET {assignments} WHERE seq = 2", b)
        conn.execute(f"UPDATE audit_records SET {assignments} WHERE seq = 3", a)
    result = verify(log)
    assert (result.ok, result.broken_seq) == (False, 2)
    assert "reordered" in (result.reason or "")


async def test_verify_finds_a_truncated_tail_through_the_head_checkpoint(log: Path) -> None:
    tamper(log, "DELETE FROM audit_records WHERE seq >= 6")
    result = verify(log)
    assert (result.ok, result.broken_seq, result.head_seq) == (False, 6, 5)
    assert "seq 7" in (result.reason or "") and "removed from the end" in (result.reason or "")


async def test_verify_finds_a_missing_or_edited_checkpoint(log: Path) -> None:
    tamper(log, "UPDATE meta SET value = '5' WHERE key = 'head_seq'")
    assert "does not match" in (verify(log).reason or "")
    tamper(log, "DELETE FROM meta WHERE key = 'head_hash'")
    assert "missing" in (verify(log).reason or "")


async def test_verify_reports_a_record_that_no_longer_parses(log: Path) -> None:
    for broken in ("not json", "[1, 2]", '{"prev_hash": "00"}'):
        tamper(log, f"UPDATE audit_records SET record = '{broken}' WHERE seq = 2")
        result = verify(log)
        assert (result.ok, result.broken_seq) == (False, 2)
        assert "edited" in (result.reason or "")


# -- export ------------------------------------------------------------------------------------


async def test_export_writes_every_raw_record_with_its_chain_fields(log: Path) -> None:
    out = io.StringIO()
    result = export(log, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (result.count, result.last_seq) == (7, 7)
    assert [line["seq"] for line in lines] == list(range(1, 8))
    assert [line["phase"] for line in lines[:2]] == ["intent", "outcome"]
    # The exported values are exact, so a SIEM can recompute every link itself.
    prev = lines[0]["prev_hash"]
    for line in lines:
        values = {name: line[name] for name in RECORD_FIELDS if name in line}
        values.update(phase=line["phase"], timestamp=line["timestamp_epoch"])
        values.update(scope_granted=tuple(line["scope_granted"]), scopes_required=tuple(line["scopes_required"]))
        assert chain_hash(prev, AuditRecord(**values)) == line["hash"]
        prev = line["hash"]


async def test_export_resumes_after_a_seq_or_a_calls_first_record(log: Path, tmp_path: Path) -> None:
    first = io.StringIO()
    export(log, first, after_seq=5)
    assert [json.loads(line)["seq"] for line in first.getvalue().splitlines()] == [6, 7]
    rows = list(query(log))
    second = io.StringIO()
    result = export(log, second, after_event_id=rows[0]["event_id"])
    assert [json.loads(line)["seq"] for line in second.getvalue().splitlines()] == [2, 3, 4, 5, 6, 7]
    assert result.last_seq == 7
    empty = io.StringIO()
    assert export(log, empty, after_seq=7).last_seq is None
    with pytest.raises(LookupError):
        export(log, io.StringIO(), after_event_id="no-such-id")
