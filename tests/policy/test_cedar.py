"""Cedar policy files at start-up (file:line errors) and the decider's rules, as pure decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.app import create_app
from mcp_gateway.config import ServerEntry, load_config
from mcp_gateway.errors import ConfigError
from mcp_gateway.policy.cedar import CedarDecider, CedarPolicies
from mcp_gateway.policy.cedar_source import split_statements
from mcp_gateway.policy.decider import DecisionInput, ScopeDecider
from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.scopes import ScopeHierarchy
from tests.policy._cedar_stack import ARGUMENTS_SCHEMA, policies

GOOD = policies(1_800_000_000)


def _gateway(tmp_path: Path, policy_text: str) -> Path:
    (tmp_path / "server_allowlist.toml").write_text(
        '[servers.everything]\nurl = "http://127.0.0.1:9/mcp"\ndefault_scopes = ["tools:call"]\n'
    )
    (tmp_path / "gateway.toml").write_text(
        '[policy]\ncedar = "policies.cedar"\n[auth]\nissuer = "https://issuer.example"\n'
        'jwks_uri = "https://issuer.example/jwks.json"\n'
    )
    (tmp_path / "policies.cedar").write_text(policy_text)
    (tmp_path / "policies.cedarschema").write_text(ARGUMENTS_SCHEMA)
    return tmp_path / "gateway.toml"


def _start(config_path: Path) -> None:
    create_app(load_config(config_path))


def test_a_syntax_error_stops_start_up_naming_the_file_and_the_line_of_the_broken_policy(tmp_path: Path) -> None:
    broken = GOOD.replace("context.arguments.amount > 100 }", "context.arguments.amount > }")
    with pytest.raises(ConfigError) as raised:
        _start(_gateway(tmp_path, broken))
    assert str(raised.value).startswith(f"{tmp_path / 'policies.cedar'}:4: (syntax): not a Cedar policy")


def test_a_policy_that_breaks_the_schema_stops_start_up_naming_file_line_and_attribute(tmp_path: Path) -> None:
    broken = GOOD.replace("principal.user }", "principal.usr }")
    with pytest.raises(ConfigError) as raised:
        _start(_gateway(tmp_path, broken))
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'policies.cedar'}:16: policy own-repos-only:")
    assert "usr" in message


def test_an_argument_the_arguments_schema_does_not_declare_is_a_schema_violation(tmp_path: Path) -> None:
    broken = GOOD.replace("context.arguments has amount && context.arguments.amount", "context.arguments.sum")
    with pytest.raises(ConfigError) as raised:
        _start(_gateway(tmp_path, broken))
    assert ":2: policy transfer-limit:" in str(raised.value) and "sum" in str(raised.value)


def test_every_policy_must_carry_a_unique_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _start(_gateway(tmp_path, GOOD + '\npermit (principal, action, resource == Tool::"everything/echo");\n'))
    assert "@id" in str(raised.value) and f"policies.cedar:{GOOD.count(chr(10)) + 2}:" in str(raised.value)
    duplicate = GOOD.replace('@id("deploy-window")', '@id("transfer-limit")')
    with pytest.raises(ConfigError, match="already used by the policy on line 2"):
        _start(_gateway(tmp_path, duplicate))


def test_a_valid_policy_file_starts_the_gateway_with_cedar_deciding(tmp_path: Path) -> None:
    app = create_app(load_config(_gateway(tmp_path, GOOD)))
    assert isinstance(app.routes["everything"].decider, CedarDecider)


def test_statements_are_cut_at_semicolons_outside_strings_and_comments() -> None:
    text = (
        '// a; comment\n@id("a;b")\npermit (principal, action, resource)\nwhen { "x;\\"y" == "x" };\n'
        "\nforbid(principal,action,resource);"
    )
    statements = split_statements(text)
    assert [s.line for s in statements] == [2, 6]
    assert statements[1].text.strip() == "forbid(principal,action,resource);"


def _decider(tmp_path: Path, text: str, shadow: str | None = None) -> CedarDecider:
    (tmp_path / "p.cedar").write_text(text)
    (tmp_path / "p.cedarschema").write_text(ARGUMENTS_SCHEMA)
    shadow_set = None
    if shadow is not None:
        (tmp_path / "s.cedar").write_text(shadow)
        (tmp_path / "s.cedarschema").write_text(ARGUMENTS_SCHEMA)
        shadow_set = CedarPolicies.load(tmp_path / "s.cedar")
    entry = ServerEntry(name="everything", url="http://127.0.0.1:9/mcp", default_scopes=("tools:call",))
    scopes = ScopeDecider(ServerPolicy(entry, ScopeHierarchy()))
    return CedarDecider(scopes, CedarPolicies.load(tmp_path / "p.cedar"), shadow_set)


def _call(tool: str, arguments: object, **extra: object) -> DecisionInput:
    fields: dict[str, object] = {
        "server": "everything",
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
        "scopes": frozenset({"tools:call"}),
        "agent_id": "agent-a",
        "delegating_user": "alice",
        "name": tool,
        "arguments": arguments,
        "now": 1_800_000_000.0,
        "client_address": "10.1.2.3",
        **extra,
    }
    return DecisionInput(**fields)  # type: ignore[arg-type]


def test_a_permit_states_when_its_target_may_be_called_and_forbid_wins(tmp_path: Path) -> None:
    decider = _decider(
        tmp_path,
        '@id("lan-only")\npermit (principal, action, resource == Tool::"everything/transfer")\n'
        'when { context has client_address && context.client_address.isInRange(ip("10.0.0.0/8")) };\n'
        '@id("limit")\nforbid (principal, action, resource == Tool::"everything/transfer")\n'
        "when { context.arguments has amount && context.arguments.amount > 100 };\n",
    )
    ok = decider.decide(_call("transfer", {"amount": 5}))
    assert (ok.kind, ok.rule) == ("allow", "default_scopes+cedar:lan-only")
    outside = decider.decide(_call("transfer", {"amount": 5}, client_address="192.0.2.1"))
    assert (outside.kind, outside.rule) == ("deny", "cedar:lan-only")
    big = decider.decide(_call("transfer", {"amount": 500}))
    assert (big.kind, big.rule, big.reason) == ("deny", "cedar:limit", "Tool 'transfer' is refused by policy 'limit'")


def test_a_call_only_forbids_target_keeps_the_scope_decision_when_none_holds(tmp_path: Path) -> None:
    decider = _decider(tmp_path, GOOD)
    assert decider.decide(_call("transfer", {"amount": 100})).rule == "default_scopes"
    assert decider.decide(_call("echo", {"message": "hi"})).rule == "default_scopes"
    assert decider.policies is not None and decider.policies.targeting(_call("echo", {})) == []


def test_a_step_up_from_the_scopes_is_never_judged_by_cedar(tmp_path: Path) -> None:
    decision = _decider(tmp_path, GOOD).decide(_call("deploy", {}, scopes=frozenset()))
    assert (decision.kind, decision.rule) == ("step_up", "default_scopes")


def test_a_shadow_set_only_annotates_a_disagreement(tmp_path: Path) -> None:
    shadow = (
        '@id("cap-50")\nforbid (principal, action, resource == Tool::"everything/transfer")\n'
        "when { context.arguments has amount && context.arguments.amount > 50 };\n"
    )
    decider = _decider(tmp_path, GOOD, shadow)
    differs = decider.decide(_call("transfer", {"amount": 70}))
    assert (differs.kind, differs.shadow) == ("allow", "deny:cedar:cap-50")
    assert decider.decide(_call("transfer", {"amount": 20})).shadow is None
    assert decider.decide(_call("transfer", {"amount": 200})).shadow is None  # both refuse
