"""Tampering with a shared log of two writers' chains: `audit verify` names the chain and its first broken link."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from mcp_gateway.audit.cli import main
from mcp_gateway.audit.postgres import PostgresAuditReader
from mcp_gateway.audit.query import VerifyResult

from ..conftest import make_record
from ._pg import execute, fetch, opened

pytestmark = pytest.mark.anyio

PER_CHAIN = 6


async def two_chains(url: str) -> tuple[str, str]:
    """Two writers' chains of PER_CHAIN records each (intents and outcomes); returns their ids."""
    async with opened(url) as first, opened(url) as second:
        with anyio.fail_after(20):
            for i in range(PER_CHAIN // 2):
                for sink in (first, second):
                    intent = make_record(timestamp=1000.0 + i)
                    await sink.append(intent)
                    await sink.append(make_record("outcome", timestamp=1000.5 + i, event_id=intent.event_id))
        return first.chain_id, second.chain_id


def verdicts(url: str) -> dict[str, VerifyResult]:
    result = PostgresAuditReader(url).verify()
    assert result.chains is not None
    return {verdict.chain_id: verdict.result for verdict in result.chains}


async def test_an_untouched_log_of_two_chains_verifies(pg_url: str) -> None:
    a, b = await two_chains(pg_url)
    found = verdicts(pg_url)
    assert {chain: (r.ok, r.records, r.head_seq) for chain, r in found.items()} == {
        a: (True, PER_CHAIN, PER_CHAIN),
        b: (True, PER_CHAIN, PER_CHAIN),
    }


async def edit_a_record(url: str, a: str, b: str) -> None:
    edit = "UPDATE audit_records SET record = replace(record, '\"agent-7\"', '\"agent-8\"')"
    await execute(url, edit + " WHERE chain_id = $1 AND seq = 3", a)


async def delete_a_record(url: str, a: str, b: str) -> None:
    await execute(url, "DELETE FROM audit_records WHERE chain_id = $1 AND seq = 3", a)


async def delete_the_tail(url: str, a: str, b: str) -> None:
    await execute(url, "DELETE FROM audit_records WHERE chain_id = $1 AND seq > 2", a)


async def move_a_record_to_the_other_chain(url: str, a: str, b: str) -> None:
    await execute(url, "UPDATE audit_records SET chain_id = $2, seq = $3 WHERE chain_id = $1 AND seq = 3", a, b, 7)
    await execute(
        url,
        "UPDATE audit_chains SET head_seq = 7, head_hash = (SELECT hash FROM audit_records "
        "WHERE chain_id = $1 AND seq = 7) WHERE chain_id = $1",
        b,
    )


async def drop_a_chains_rows(url: str, a: str, b: str) -> None:
    await execute(url, "DELETE FROM audit_records WHERE chain_id = $1", a)


async def drop_a_chains_head(url: str, a: str, b: str) -> None:
    await execute(url, "DELETE FROM audit_chains WHERE chain_id = $1", a)


Tamper = Callable[[str, str, str], Awaitable[None]]
# What verify says of chain a (and of chain b, where the tamper breaks it too): (broken seq, reason pattern).
CASES: list[tuple[Tamper, tuple[int, str], tuple[int, str] | None]] = [
    (edit_a_record, (3, "the stored hash does not match the record"), None),
    (delete_a_record, (4, r"seq 4 follows seq 2: 1 record\(s\) deleted"), None),
    (delete_the_tail, (3, "the log ends at seq 2 but the head checkpoint records seq 6"), None),
    (move_a_record_to_the_other_chain, (4, r"seq 4 follows seq 2"), (7, "prev_hash does not match")),
    (drop_a_chains_rows, (1, "registered with 6 records but none is left"), None),
    (drop_a_chains_head, (7, "no entry in audit_chains"), None),
]


@pytest.mark.parametrize(("tamper", "in_a", "in_b"), CASES, ids=[case[0].__name__ for case in CASES])
async def test_tampering_is_found_in_the_chain_it_touched(
    pg_url: str, tamper: Tamper, in_a: tuple[int, str], in_b: tuple[int, str] | None
) -> None:
    a, b = await two_chains(pg_url)
    await tamper(pg_url, a, b)
    found = verdicts(pg_url)
    assert not found[a].ok
    assert found[a].broken_seq == in_a[0] and re.search(in_a[1], found[a].reason or ""), found[a]
    if in_b is None:
        assert found[b].ok and found[b].records == PER_CHAIN
    else:
        assert not found[b].ok
        assert found[b].broken_seq == in_b[0] and re.search(in_b[1], found[b].reason or ""), found[b]


async def test_the_cli_prints_each_chain_and_exits_1_naming_the_broken_one(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = await two_chains(pg_url)
    (tmp_path / "gateway.toml").write_text(f'[audit]\nurl = "{pg_url}"\n')
    config = ["--config", str(tmp_path / "gateway.toml")]
    assert main(["audit", "verify", *config]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"audit log intact: {2 * PER_CHAIN} records in 2 chains; heads digest ")
    heads = {row[0]: row[1:] for row in await fetch(pg_url, "SELECT chain_id, head_seq, head_hash FROM audit_chains")}
    assert sorted(out[1:]) == sorted(
        f"chain {chain}: intact, {PER_CHAIN} records; head seq {seq} hash {hash_}"
        for chain, (seq, hash_) in heads.items()
    )
    await delete_a_record(pg_url, a, b)
    assert main(["audit", "verify", *config]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"audit log BROKEN: 1 of 2 chains broken ({2 * PER_CHAIN - 4} records checked)"
    assert (
        f"chain {a}: BROKEN at seq 4: seq 4 follows seq 2: 1 record(s) deleted; last intact record: seq 2"
        in "\n".join(out)
    )
    assert f"chain {b}: intact, {PER_CHAIN} records" in "\n".join(out)
