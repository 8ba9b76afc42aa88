from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from mcp_gateway.audit.canonical import chain_hash
from mcp_gateway.audit.chain import seal
from mcp_gateway.audit.record import GENESIS_HASH
from mcp_gateway.audit.sqlite.appender import (
    ROWS_PER_STATEMENT,
    chain_position,
    commit_group,
    last_row,
    open_for_appending,
)
from mcp_gateway.audit.sqlite.schema import read_head

from ..conftest import make_record
from ._log import verify


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_for_appending(tmp_path / "audit.db", synchronous="full", busy_timeout_ms=1000)


def test_a_new_file_is_a_private_wal_database_with_an_empty_chain(tmp_path: Path) -> None:
    conn = open_for_appending(tmp_path / "audit.db", synchronous="normal", busy_timeout_ms=1000)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert chain_position(conn) == ((0, GENESIS_HASH), None)
    assert (tmp_path / "audit.db").stat().st_mode & 0o777 == 0o600
    conn.close()
    conn = open_for_appending(tmp_path / "audit.db", synchronous="full", busy_timeout_ms=1000)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_unknown_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        open_for_appending(tmp_path / "audit.db", synchronous="off", busy_timeout_ms=1000)
    assert not (tmp_path / "audit.db").exists()


@pytest.mark.parametrize("size", [1, 2, ROWS_PER_STATEMENT, ROWS_PER_STATEMENT + 1, 3 * ROWS_PER_STATEMENT + 5])
def test_a_group_is_chained_in_order_and_moves_the_head_checkpoint_with_it(conn: sqlite3.Connection, size: int) -> None:
    records = [make_record(timestamp=1000.0 + i) for i in range(size)]
    head, written, rejected = commit_group(conn, [(r, i) for i, r in enumerate(records)], (0, GENESIS_HASH))
    assert ([tag for _, tag in written], rejected) == (list(range(size)), [])
    prev = GENESIS_HASH
    for record in records:
        prev = chain_hash(prev, record)
    assert head == (size, prev) == last_row(conn) == read_head(conn)
    assert not conn.in_transaction


def test_a_record_that_cannot_be_encoded_is_left_out_of_its_group(conn: sqlite3.Connection) -> None:
    good, bad = make_record(), dataclasses.replace(make_record(), token_ttl="soon")  # type: ignore[arg-type]
    head, written, rejected = commit_group(conn, [(good, "a"), (bad, "b")], (0, GENESIS_HASH))
    assert [tag for _, tag in written] == ["a"]
    assert [(tag, type(exc)) for tag, exc in rejected] == [("b", TypeError)]
    assert head == last_row(conn) and head[0] == 1


def test_a_stale_head_fails_the_whole_group_with_nothing_written(conn: sqlite3.Connection) -> None:
    head, _, _ = commit_group(conn, [(make_record(), None)], (0, GENESIS_HASH))
    for size in (1, ROWS_PER_STATEMENT + 1):  # one statement, and a transaction of several
        with pytest.raises(sqlite3.IntegrityError):
            commit_group(conn, [(make_record(), None) for _ in range(size)], (0, GENESIS_HASH))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        assert last_row(conn) == read_head(conn) == head


def test_a_well_chained_row_added_by_hand_is_caught_by_the_head_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    writer = open_for_appending(db, synchronous="full", busy_timeout_ms=1000)
    head, _, _ = commit_group(writer, [(make_record(), None)], (0, GENESIS_HASH))
    writer.close()
    assert verify(db).ok
    # Someone who knows the format appends a row with a valid link and hash, but cannot move the checkpoint
    # without also editing meta: verify reports the disagreement.
    forged = make_record(tool="exfiltrate")
    text, digest = seal(forged, head[1])
    with sqlite3.connect(db) as other:
        other.execute(
            "INSERT INTO audit_records (seq, event_id, phase, timestamp, record, hash) VALUES (2, ?, ?, ?, ?, ?)",
            (forged.event_id, forged.phase, forged.timestamp, text, digest),
        )
    with sqlite3.connect(db) as other:
        assert read_head(other) == head
    result = verify(db)
    assert not result.ok and "does not match the last record" in (result.reason or "")


def test_a_truncated_tail_is_reported_and_chained_after_the_checkpoint(conn: sqlite3.Connection) -> None:
    head, _, _ = commit_group(conn, [(make_record(), None) for _ in range(3)], (0, GENESIS_HASH))
    conn.execute("DELETE FROM audit_records WHERE seq = 3")
    position, detail = chain_position(conn)
    assert position == head
    assert detail is not None and (detail["head_seq"], detail["tail_seq"]) == (3, 2)
