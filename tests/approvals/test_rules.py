"""The pure rules of approval: which calls wait, who may decide them, what a verdict looks like."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mcp_gateway.approvals.rules import (
    approval_json,
    approver_refusal,
    binding_of,
    parse_verdict,
    progress_body,
    refusal_text,
    rule_for,
)
from mcp_gateway.auth.principal import Principal
from mcp_gateway.config import ServerEntry

SCOPE = "approvals:decide"


def _principal(subject: str | None, agent: str, *scopes: str, issuer: str = "https://issuer") -> Principal:
    return Principal(issuer, subject, agent, subject, (), frozenset(scopes), 2e9, "jti", ("aud",))


ASKER = _principal("alice", "agent-1", "tools:call")
ENTRY = ServerEntry.model_validate(
    {"url": "http://127.0.0.1:1/mcp", "approvals": {"delete": {"approver_scope": SCOPE, "timeout_seconds": 60}}}
)


def test_only_tool_calls_of_listed_tools_wait_for_approval() -> None:
    rule = rule_for(ENTRY, "tools/call", "delete")
    assert rule is not None and rule.approver_scope == SCOPE and rule.timeout_seconds == 60
    assert rule_for(ENTRY, "tools/call", "echo") is None
    assert rule_for(ENTRY, "prompts/get", "delete") is None
    assert rule_for(ENTRY, "tools/call", None) is None


def test_an_approver_needs_the_scope_the_same_issuer_and_to_be_someone_else() -> None:
    bob = _principal("bob", "console", SCOPE)
    assert approver_refusal(bob, ASKER, SCOPE, expires_at=100, now=50) is None
    cases = {
        "scope": _principal("bob", "console", "tools:call"),
        "issuer": _principal("bob", "console", SCOPE, issuer="https://other"),
        "same sub": _principal("alice", "console", SCOPE),
        "same agent": _principal("carol", "agent-1", SCOPE),
        "no sub": _principal(None, "console", SCOPE),
    }
    for why, approver in cases.items():
        refusal = approver_refusal(approver, ASKER, SCOPE, expires_at=100, now=50)
        assert refusal is not None and refusal.status == 403, why
    expired = approver_refusal(bob, ASKER, SCOPE, expires_at=100, now=100)
    assert expired is not None and expired.status == 410


def test_a_binding_names_the_principal_server_tool_and_arguments() -> None:
    one = binding_of(ASKER, "srv", "delete", "d1")
    assert one == binding_of(ASKER, "srv", "delete", "d1")
    assert one != binding_of(ASKER, "srv", "delete", "d2")
    assert one != binding_of(ASKER, "other", "delete", "d1")
    assert one != binding_of(_principal("alice", "agent-2"), "srv", "delete", "d1")


@pytest.mark.parametrize(
    "body",
    [[], {"decision": "yes"}, {"decision": "approve", "reason": 3}, {"decision": "deny", "reason": "x" * 1001}],
)
def test_a_verdict_is_approve_or_deny_with_an_optional_short_reason(body: object) -> None:
    with pytest.raises(ValueError):
        parse_verdict(body)


def test_a_verdict_parses_and_the_audit_field_is_compact_json() -> None:
    assert parse_verdict({"decision": "deny", "reason": ""}) == ("deny", None, None)
    assert parse_verdict({"decision": "approve", "reason": "ok", "arguments_sha256": "ab"}) == ("approve", "ok", "ab")
    assert json.loads(approval_json("id1", "bob", "approve", None)) == {
        "id": "id1",
        "approver": "bob",
        "decision": "approve",
        "reason": None,
    }


def test_progress_and_refusals_say_what_happened() -> None:
    message = json.loads(progress_body("tok", 2, "waiting"))
    assert message == {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": "tok", "progress": 2, "message": "waiting"},
    }
    assert "denied by an approver: no" in refusal_text("t", "deny", "no", 5)
    assert "within 5 seconds" in refusal_text("t", "expired", None, 5)
    assert "shutting down" in refusal_text("t", "shutdown", None, 5)
    assert "withdrawn" in refusal_text("t", "withdrawn", None, 5)


@pytest.mark.parametrize(
    "rule",
    [
        {},
        {"approver_scope": ""},
        {"approver_scope": "a b"},
        {"approver_scope": "x", "timeout_seconds": 0},
        {"approver_scope": "x", "extra": 1},
    ],
)
def test_an_approval_rule_needs_one_scope_token_and_a_positive_timeout(rule: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServerEntry.model_validate({"url": "http://127.0.0.1:1/mcp", "approvals": {"delete": rule}})
