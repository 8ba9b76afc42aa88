from __future__ import annotations

import json

from mcp_gateway.auth.principal import Principal


def _principal(**overrides: object) -> Principal:
    values: dict[str, object] = {
        "issuer": "https://issuer.test",
        "subject": "alice",
        "agent_id": "agent-1",
        "delegating_user": "alice",
        "actors": (),
        "scopes": frozenset({"tools:read"}),
        "expires_at": 1000.0,
        "token_id": "jti-1",
        "audience": ("http://127.0.0.1:8080/github/mcp",),
    }
    values.update(overrides)
    return Principal(**values)  # type: ignore[arg-type]


def test_binding_key_ignores_scopes_expiry_and_token_id_so_a_stepped_up_token_keeps_its_sessions() -> None:
    original = _principal()
    stepped_up = _principal(scopes=frozenset({"tools:read", "admin"}), expires_at=9999.0, token_id="jti-2")
    assert original.binding_key() == stepped_up.binding_key()


def test_binding_key_differs_for_a_different_issuer_subject_or_agent() -> None:
    keys = {
        _principal().binding_key(),
        _principal(issuer="https://other.test").binding_key(),
        _principal(subject="bob").binding_key(),
        _principal(agent_id="agent-2").binding_key(),
        _principal(subject=None).binding_key(),
    }
    assert len(keys) == 5


def test_binding_key_cannot_be_forged_by_separator_characters_inside_a_subject() -> None:
    a = _principal(subject='x","agent-9', agent_id="y")
    b = _principal(subject="x", agent_id='agent-9","y')
    assert a.binding_key() != b.binding_key()
    assert json.loads(a.binding_key()) == ["https://issuer.test", 'x","agent-9', "y"]


def test_ttl_counts_whole_seconds_left_and_never_goes_negative() -> None:
    principal = _principal(expires_at=1000.0)
    assert principal.ttl(400.5) == 599
    assert principal.ttl(1000.0) == 0
    assert principal.ttl(5000.0) == 0
