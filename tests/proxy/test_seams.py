"""The pipeline's seams: credential sources, deciders and limit stores plug in without touching the pipeline."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.config import RateLimit
from mcp_gateway.credentials import CredentialRequest, CredentialSource, NoCredential
from mcp_gateway.credentials.source import CredentialUse, IssuedCredential
from mcp_gateway.errors import RateLimited
from mcp_gateway.limits import LimitStore, MemoryLimitStore
from mcp_gateway.policy.decider import Decider, DecisionInput, ScopeDecider
from mcp_gateway.policy.decision import Decision
from tests._mcp import modern_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import (
    Receive,
    Scope,
    ScriptedUpstream,
    Send,
    json_error,
    modern_call_body,
    result_for,
    send_raw,
)

pytestmark = pytest.mark.anyio


class RotatingSource:
    """A credential source that hands out token-1, then token-2 once told the upstream refused token-1."""

    def __init__(self, *, refreshes: int = 1) -> None:
        self.generation = 1
        self.refreshes_left = refreshes
        self.requests: list[CredentialRequest] = []
        self.rejections = 0

    async def issue(self, request: CredentialRequest) -> IssuedCredential:
        self.requests.append(request)
        secret = self.token.removeprefix("Bearer ").encode()
        use = CredentialUse("rotating", token_id=f"generation-{self.generation}")
        return IssuedCredential(((b"authorization", self.token.encode()),), (secret,), use)

    @property
    def token(self) -> str:
        return f"Bearer rotating-secret-token-{self.generation}"

    async def rejected(self, request: CredentialRequest, credential: IssuedCredential, status: int) -> bool:
        self.rejections += 1
        if self.refreshes_left == 0:
            return False
        self.refreshes_left -= 1
        self.generation += 1
        return True

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return ()  # no long-lived secret: each issued credential carries its own

    async def aclose(self) -> None:
        return None


async def _accept_only_token_2(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    headers = dict(scope["headers"])
    if headers.get(b"authorization") != b"Bearer rotating-secret-token-2":
        await send_raw(
            send, 401, b"", content_type=None, headers=[(b"www-authenticate", b'Bearer error="invalid_token"')]
        )
        return
    # An upstream that echoes the credential it got: the relay must redact the live secret.
    await send_raw(send, 200, json.dumps(result_for(body, f"seen {headers[b'authorization'].decode()}")).encode())


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    upstream = ScriptedUpstream(_accept_only_token_2)
    audit = MemoryAuditSink()
    async with gateway_stack(tmp_path, upstream_app=upstream, audit=audit) as stack:
        stack.extra.update(upstream=upstream, audit=audit)
        yield stack


def _replace_route(stack: Stack, **changes: Any) -> None:
    route = stack.app.routes["everything"]
    stack.app.swap_routes({"everything": dataclasses.replace(route, **changes)})


async def _call(stack: Stack, tool: str = "echo", arguments: dict[str, Any] | None = None) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            return await http.post(
                stack.mcp_url(),
                headers=modern_headers(stack.token(["tools:read", "tools:call"]), "tools/call", tool),
                json=modern_call_body(tool, arguments if arguments is not None else {"message": "hi"}),
            )


def test_every_shipped_implementation_satisfies_its_seam() -> None:
    sources: list[CredentialSource] = [NoCredential(), RotatingSource()]
    limits: LimitStore = MemoryLimitStore(2, 60)
    deciders: list[Decider] = []
    assert sources and limits and deciders == []
    # mypy checks the assignments above; ScopeDecider is checked where routes are built.
    assert hasattr(ScopeDecider, "decide")


async def test_a_source_that_refreshes_after_a_401_gets_one_retry_and_the_call_goes_through(stack: Stack) -> None:
    source = RotatingSource()
    _replace_route(stack, credentials=source)
    response = await _call(stack)
    assert response.status_code == 200
    upstream: ScriptedUpstream = stack.extra["upstream"]
    assert [h["authorization"] for h in upstream.headers] == [
        "Bearer rotating-secret-token-1",
        "Bearer rotating-secret-token-2",
    ]
    assert source.rejections == 1
    # The live secret is redacted even though the upstream echoed it.
    assert "rotating-secret-token-2" not in response.text
    assert "[REDACTED]" in response.text
    # The source was asked for exactly this operation and its scopes.
    assert {(r.method, r.name, r.scopes) for r in source.requests} == {("tools/call", "echo", ("tools:read",))}


async def test_a_second_401_after_a_refresh_is_a_502_and_never_a_third_request(stack: Stack) -> None:
    source = RotatingSource(refreshes=5)  # a source that would refresh again and again
    source.generation = 0  # token-0, then token-1: both refused
    _replace_route(stack, credentials=source)
    response = await _call(stack)
    assert response.status_code == 502
    assert json_error(response)["message"] == (
        "Bad Gateway: the upstream credential for everything (rotating) failed: "
        "the upstream answered 401 after one refresh"
    )
    upstream: ScriptedUpstream = stack.extra["upstream"]
    assert len(upstream.headers) == 2
    assert source.rejections == 1  # one refresh per request, whatever the source would do: never a loop
    (outcome,) = [r for r in stack.extra["audit"].records if r.phase == "outcome"]
    assert (outcome.outcome, outcome.http_status) == ("upstream_error", 502)
    assert outcome.upstream_credential is not None
    assert json.loads(outcome.upstream_credential)["token_id"] == "generation-1"  # the one that was refused last


async def test_a_source_that_cannot_refresh_gets_no_retry(stack: Stack) -> None:
    source = RotatingSource(refreshes=0)
    _replace_route(stack, credentials=source)
    response = await _call(stack)
    assert response.status_code == 502
    assert len(stack.extra["upstream"].headers) == 1


class AmountCap:
    """An argument-aware decider on top of the scope rules: `amount` above 100 is denied."""

    def __init__(self, scopes: Decider) -> None:
        self.scopes = scopes
        self.seen: list[DecisionInput] = []

    def decide(self, request: DecisionInput) -> Decision:
        self.seen.append(request)
        decision = self.scopes.decide(request)
        arguments = request.arguments if isinstance(request.arguments, dict) else {}
        if decision.kind == "allow" and arguments.get("amount", 0) > 100:
            return Decision("deny", decision.scopes_required, "amount_cap")
        return decision


async def test_a_decider_judges_from_one_input_value_and_its_rule_is_audited(stack: Stack) -> None:
    route = stack.app.routes["everything"]
    decider = AmountCap(route.decider)
    _replace_route(stack, credentials=RotatingSource(refreshes=0), decider=decider)
    body_args = {"message": "pay", "amount": 500}
    response = await _call(stack, arguments=body_args)
    assert response.status_code == 200
    assert json_error(response) == {"code": -32602, "message": "Tool 'echo' is not permitted"}
    assert stack.extra["upstream"].headers == []  # never forwarded
    (seen,) = decider.seen
    assert (seen.server, seen.method, seen.name, seen.arguments) == ("everything", "tools/call", "echo", body_args)
    assert (seen.agent_id, seen.era, seen.scopes) == ("agent-a", "2026-07-28", frozenset({"tools:read", "tools:call"}))
    (record,) = stack.extra["audit"].records
    assert (record.decision, record.policy_rule, record.outcome) == ("deny", "amount_cap", "denied")


class ClosedLimits(MemoryLimitStore):
    """A limit store whose buckets are always empty, as a shared store would answer for a spent agent."""

    async def take(self, keys: Sequence[tuple[str, RateLimit]], now: float) -> float | None:
        return 7.5 if keys else None


async def test_a_limit_store_refusal_is_a_429_with_retry_after_before_the_upstream_sees_the_call(
    tmp_path: Path,
) -> None:
    upstream = ScriptedUpstream(_accept_only_token_2)
    async with gateway_stack(
        tmp_path,
        upstream_app=upstream,
        gateway_extra="[rate_limits]\nper_agent = { rate = 10.0, burst = 10 }",
        limits=ClosedLimits(4, 60),
    ) as stack:
        response = await _call(stack)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "8"
    assert upstream.headers == []


async def test_the_memory_limit_store_caps_sessions_per_principal() -> None:
    store = MemoryLimitStore(1, 60)
    await store.reserve_session("alice", 0.0)
    with pytest.raises(RateLimited):
        await store.reserve_session("alice", 1.0)
    await store.session_cancelled("alice")
    await store.reserve_session("alice", 2.0)
    await store.session_opened("alice", "everything", "up-1", 2.0)
    with pytest.raises(RateLimited):
        await store.reserve_session("alice", 3.0)
    await store.session_closed("alice", "everything", "up-1")
    await store.reserve_session("alice", 4.0)
    assert store.healthy
