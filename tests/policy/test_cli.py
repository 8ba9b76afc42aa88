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
from mcp_gateway.identity.tool_pins import tool_sha256
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


# -- the pinned input schemas (--tools) ----------------------------------------------------------------


def _transfer(maximum: int | None) -> dict[str, Any]:
    """The bank's transfer tool as a tools/list presents it, with an optional cap on `amount`."""
    amount: dict[str, Any] = {"type": "number"} if maximum is None else {"type": "number", "maximum": maximum}
    schema = {"type": "object", "properties": {"amount": amount, "to": {"type": "string"}}, "required": ["amount"]}
    return {"name": "transfer", "description": "Move money", "inputSchema": schema}


def _pinned(directory: Path, tool: dict[str, Any], pin: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """An allowlist pinning `pin` (default: `tool`) and a tools/list result presenting `tool`."""
    digest = tool_sha256(pin if pin is not None else tool)
    (directory / "allowlist.toml").write_text(
        '[servers.everything]\nurl = "http://127.0.0.1:9/mcp"\ndefault_scopes = ["tools:call"]\n'
        f'tools_sha256 = {{ transfer = "{digest}" }}\n'
    )
    (directory / "tools.json").write_text(json.dumps({"tools": [tool]}))
    return directory / "allowlist.toml", directory / "tools.json"


SCHEMA_CASES = """
[[case]]
name = "a transfer within the pinned schema is allowed"
agent = "agent-a"
scopes = ["tools:call"]
server = "everything"
tool = "transfer"
arguments = { amount = 100 }
expect = "allow"

[[case]]
name = "an amount the pinned schema caps is refused before Cedar sees it"
agent = "agent-a"
scopes = ["tools:call"]
server = "everything"
tool = "transfer"
arguments = { amount = 5000 }
expect = "deny"
rule = "input_schema"

[[case]]
name = "a transfer without an amount breaks the schema"
agent = "agent-a"
scopes = ["tools:call"]
server = "everything"
tool = "transfer"
expect = "deny"
rule = "input_schema"
"""


def test_policy_test_refuses_a_case_whose_arguments_break_the_pinned_input_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allowlist, tools = _pinned(tmp_path, _transfer(1000))
    (tmp_path / "cases.toml").write_text(SCHEMA_CASES)
    argv = ["policy", "test", str(tmp_path / "cases.toml"), "--config", str(_config(tmp_path))]
    assert main([*argv, "--allowlist", str(allowlist), "--tools", str(tools)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "PASS  a transfer within the pinned schema is allowed: allow (default_scopes)",
        "PASS  an amount the pinned schema caps is refused before Cedar sees it: deny (input_schema)",
        "PASS  a transfer without an amount breaks the schema: deny (input_schema)",
        "3 passed, 0 failed",
    ]
    # Without the schemas the same cases meet Cedar's limit and the scope rules instead.
    assert main([*argv, "--allowlist", str(allowlist)]) == 1
    assert "got deny (cedar:transfer-limit)" in capsys.readouterr().out


def test_policy_test_refuses_a_tools_file_whose_definition_does_not_match_its_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allowlist, tools = _pinned(tmp_path, _transfer(1000), pin=_transfer(None))
    (tmp_path / "cases.toml").write_text(SCHEMA_CASES)
    argv = ["policy", "test", str(tmp_path / "cases.toml"), "--config", str(_config(tmp_path))]
    assert main([*argv, "--allowlist", str(allowlist), "--tools", str(tools)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"configuration error: {tools}: tools['transfer']: the definition hashes to ")
    assert f"but servers.everything.tools_sha256 pins {tool_sha256(_transfer(None))}" in captured.err


@pytest.mark.anyio
async def test_replay_lists_a_call_whose_decision_changes_because_the_candidate_pin_changes_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cedar_stack(tmp_path, cedar=policies(time.time()), audit_extra="store_arguments = true\n") as stack:
        await _calls(stack, [("agent-a", "transfer", {"amount": 50}), ("agent-a", "transfer", {"amount": 80})])
    argv = ["policy", "replay", "--config", str(tmp_path / "gateway.toml"), "--since", "1h", "--format", "json"]
    reports = []
    for maximum in (None, 60):  # the pin as it is, then a candidate pin whose schema caps amount at 60
        candidate = tmp_path / f"candidate-{maximum}"
        candidate.mkdir()
        allowlist, tools = _pinned(candidate, _transfer(maximum))
        assert main([*argv, "--allowlist", str(allowlist), "--tools", str(tools)]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    unchanged, capped = reports
    assert (unchanged["changes"], unchanged["summary"]["decided"]) == ([], 2)
    transfer_80 = _event_ids(tmp_path / "audit.db", "transfer", "json_extract(arguments, '$.amount') = 80")
    assert capped["changes"] == [
        {"was": "allow", "becomes": "deny", "rule": "input_schema", "agent": "agent-a",
         "server": "everything", "tool": "transfer", "calls": 1, "event_ids": transfer_80},
    ]  # fmt: skip
    assert capped["summary"] == {"decided": 2, "changed": 1, "unchanged": 1, "undecidable": 0, "skipped": 0}


def test_replay_with_schemas_re_decides_a_call_the_live_schema_refused_instead_of_keeping_the_refusal(
    tmp_path: Path,
) -> None:
    from mcp_gateway.config import load_allowlist
    from mcp_gateway.policy.offline import PolicyBundle
    from mcp_gateway.policy.pinned_tools import load_pinned_schemas
    from mcp_gateway.policy.replay import replay

    row = {
        "event_id": "e1",
        "timestamp": NOW,
        "method": "tools/call",
        "mcp_server": "everything",
        "tool": "transfer",
        "agent_id": "agent-a",
        "scope_granted": ["tools:call"],
        "decision": "deny",
        "policy_rule": "input_schema",  # refused live by a pinned schema that capped amount at 60
        "arguments": '{"amount": 80}',
        "arguments_sha256": "0" * 64,
    }
    allowlist, tools = _pinned(tmp_path, _transfer(None))  # the candidate pin lifts the cap
    servers, _ = load_allowlist(allowlist)
    with_schemas = PolicyBundle(servers, arguments_check=load_pinned_schemas([str(tools)], servers))
    (change,) = replay([row], with_schemas).changes
    assert (change.was, change.becomes, change.rule, change.event_ids) == ("deny", "allow", "default_scopes", ["e1"])
    # Without the schemas the candidate cannot judge them, so the live refusal stands.
    assert replay([row], PolicyBundle(servers)).changes == []
