"""`mcp-gateway policy test` on example cases and `policy replay` on an audit log a real gateway wrote."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.cli import main
from mcp_gateway.policy import cli as policy_cli
from tests._stack import Stack
from tests.policy._cedar_stack import cedar_stack, policies, write_policy_files

NOW = 1_800_000_000
CASES = f"""
[[case]]
name = "a transfer of 100 is allowed"
agent = "agent-a"
scopes = ["tools:call"]
server = "everything"
tool = "transfer"
arguments = {{ amount = 100 }}
expect = "allow"

[[case]]
name = "a transfer of 101 is refused by the limit"
agent = "agent-a"
scopes = ["tools:call"]
server = "everything"
tool = "transfer"
arguments = {{ amount = 101 }}
expect = "deny"
rule = "cedar:transfer-limit"

[[case]]
name = "alice reads her own repository"
agent = "agent-a"
user = "alice"
scopes = ["tools:call"]
server = "everything"
tool = "read_repo"
arguments = {{ owner = "alice", repo = "notes" }}
expect = "allow"

[[case]]
name = "a deploy outside the window is refused"
agent = "agent-a"
scopes = ["tools:call"]
server = "everything"
tool = "deploy"
context = {{ now = {NOW + 7200} }}
expect = "deny"
rule = "cedar:deploy-window"

[[case]]
name = "without the scope the answer is a step-up"
agent = "agent-a"
scopes = []
server = "everything"
tool = "deploy"
context = {{ now = 2027-01-15T10:00:00Z }}
expect = "step_up"
"""


def _config(tmp_path: Path) -> Path:
    (tmp_path / "server_allowlist.toml").write_text(
        '[servers.everything]\nurl = "http://127.0.0.1:9/mcp"\ndefault_scopes = ["tools:call"]\n'
    )
    (tmp_path / "gateway.toml").write_text('[policy]\ncedar = "policies.cedar"\n')
    write_policy_files(tmp_path, policies(NOW))
    return tmp_path / "gateway.toml"


def test_policy_test_prints_a_pass_per_case_and_exits_0_when_every_decision_is_as_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cases.toml").write_text(CASES)
    assert main(["policy", "test", str(tmp_path / "cases.toml"), "--config", str(_config(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "PASS  a transfer of 100 is allowed: allow (default_scopes)",
        "PASS  a transfer of 101 is refused by the limit: deny (cedar:transfer-limit)",
    ]
    assert out[-1] == "5 passed, 0 failed"


def test_policy_test_exits_1_and_names_the_case_whose_decision_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cases.toml").write_text(CASES.replace("amount = 100 }", "amount = 250 }"))
    assert main(["policy", "test", str(tmp_path / "cases.toml"), "--config", str(_config(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "FAIL  a transfer of 100 is allowed: expected allow, got deny (cedar:transfer-limit)" in out
    assert out.splitlines()[-1] == "4 passed, 1 failed"


def test_policy_test_runs_the_arguments_check_between_the_scopes_and_cedar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pinned input schemas plug in here; a stand-in that refuses any `amount` above 1000.
    def check(server: str, tool: str, arguments: Any) -> str | None:
        return "/amount: too large" if isinstance(arguments, dict) and arguments.get("amount", 0) > 1000 else None

    monkeypatch.setattr(policy_cli, "arguments_check", check)
    huge = (
        '\n[[case]]\nname = "a huge amount fails the schema before Cedar sees it"\nagent = "agent-a"\n'
        'scopes = ["tools:call"]\nserver = "everything"\ntool = "transfer"\narguments = { amount = 5000 }\n'
        'expect = "deny"\nrule = "input_schema"\n'
    )
    (tmp_path / "cases.toml").write_text(CASES + huge)
    assert main(["policy", "test", str(tmp_path / "cases.toml"), "--config", str(_config(tmp_path))]) == 0
    assert "deny (input_schema)" in capsys.readouterr().out


def test_a_malformed_case_is_refused_naming_the_case_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cases.toml").write_text(CASES.replace('expect = "allow"', 'expect = "maybe"', 1))
    assert main(["policy", "test", str(tmp_path / "cases.toml"), "--config", str(_config(tmp_path))]) == 2
    assert "case[0].expect" in capsys.readouterr().err


async def _calls(stack: Stack, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
    for client, tool, arguments in calls:
        with anyio.fail_after(20):
            async with stack.client(stack.token(["tools:call"], client=client)) as session:
                with contextlib.suppress(MCPError):  # refused: recorded all the same
                    await session.call_tool(tool, arguments)


CALLS = [
    ("agent-a", "transfer", {"amount": 50}),
    ("agent-a", "transfer", {"amount": 150}),
    ("agent-a", "transfer", {"amount": 80}),
    ("agent-a", "echo", {"message": "a"}),
    ("agent-b", "echo", {"message": "b"}),
    ("agent-a", "read_repo", {"owner": "user-of-agent-a", "repo": "notes"}),
    ("agent-a", "deploy", {}),
]
CANDIDATE_ALLOWLIST = """[servers.everything]
url = "http://127.0.0.1:9/mcp"
default_scopes = ["tools:call"]
tool_scopes = { echo = ["admin"] }
"""


async def _replay(tmp_path: Path, store_arguments: bool, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    now = time.time()
    extra = f"store_arguments = {'true' if store_arguments else 'false'}\n"
    async with cedar_stack(tmp_path, cedar=policies(now), audit_extra=extra) as stack:
        await _calls(stack, CALLS)
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "allowlist.toml").write_text(CANDIDATE_ALLOWLIST)
    write_policy_files(candidate, policies(now).replace("amount > 100", "amount > 60"))
    argv = ["policy", "replay", "--config", str(tmp_path / "gateway.toml"), "--since", "1h", "--format", "json"]
    argv += ["--allowlist", str(candidate / "allowlist.toml"), "--cedar", str(candidate / "policies.cedar")]
    assert main(argv) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def _event_ids(database: Path, tool: str, where: str = "1") -> list[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            f"SELECT event_id FROM audit_fields WHERE phase != 'outcome' AND tool = ? AND {where} ORDER BY seq",
            (tool,),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.anyio
async def test_replay_lists_exactly_the_recorded_calls_the_candidate_decides_differently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await _replay(tmp_path, True, capsys)
    database = tmp_path / "audit.db"
    transfer_80 = _event_ids(database, "transfer", "json_extract(arguments, '$.amount') = 80")
    echo_a = _event_ids(database, "echo", "agent_id = 'agent-a'")
    echo_b = _event_ids(database, "echo", "agent_id = 'agent-b'")
    assert report["changes"] == [
        {"was": "allow", "becomes": "deny", "rule": "cedar:transfer-limit", "agent": "agent-a",
         "server": "everything", "tool": "transfer", "calls": 1, "event_ids": transfer_80},
        {"was": "allow", "becomes": "step_up", "rule": "tool_scopes.echo", "agent": "agent-a",
         "server": "everything", "tool": "echo", "calls": 1, "event_ids": echo_a},
        {"was": "allow", "becomes": "step_up", "rule": "tool_scopes.echo", "agent": "agent-b",
         "server": "everything", "tool": "echo", "calls": 1, "event_ids": echo_b},
    ]  # fmt: skip
    assert report["summary"] == {"decided": 7, "changed": 3, "unchanged": 4, "undecidable": 0, "skipped": 0}


@pytest.mark.anyio
async def test_replay_counts_calls_whose_unstored_arguments_the_candidate_reads_as_undecidable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await _replay(tmp_path, False, capsys)
    assert [(c["tool"], c["agent"]) for c in report["changes"]] == [("echo", "agent-a"), ("echo", "agent-b")]
    assert report["undecidable"] == [
        {"agent": "agent-a", "server": "everything", "tool": "read_repo", "calls": 1},
        {"agent": "agent-a", "server": "everything", "tool": "transfer", "calls": 3},
    ]
    assert report["summary"]["decided"] == 3  # the two echoes and the deploy, which no argument decides


def test_replay_prints_a_table_and_csv_grouped_by_rule_agent_and_tool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_gateway.policy.replay import Change, ReplayReport, render

    report = ReplayReport(
        decided=3, unchanged=1, changes=[Change("allow", "deny", "cedar:x", "a", "s", "t", ["e1", "e2"])]
    )
    table = render(report, "table").splitlines()
    assert table[0].startswith("3 calls re-decided: 2 change, 1 do not")
    assert table[1].split() == ["rule", "agent", "server", "tool", "was", "becomes", "calls", "event_ids"]
    assert table[2].split() == ["cedar:x", "a", "s", "t", "allow", "deny", "2", "e1", "e2"]
    assert render(report, "csv").splitlines()[1] == "cedar:x,a,s,t,allow,deny,2,e1 e2"
