"""SECURITY.md "Opaque state the gateway relays for one principal (2026-07-28 requestState) is bound to that principal
and route; another principal's replay is refused, not forwarded"."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from examples.everything_server import build_app
from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.auth.principal import Principal
from mcp_gateway.proxy.continuations import ContinuationSealer
from tests._mcp import modern_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import (
    ScriptedUpstream,
    json_error,
    modern_call_body,
    progress_for,
    read_events,
    send_chunk,
    spellings_of_the_same_bytes,
    sse_message,
    start_sse,
)

pytestmark = pytest.mark.anyio

TOOL = "test_input_required_result_request_state"  # answers input_required with requestState "request-state-nonce"
MULTI_ROUND = "test_input_required_result_multi_round"  # a JSON requestState that evolves over rounds
NOT_ISSUED = {"code": -32602, "message": "Invalid params: requestState was not issued to this principal"}
CONFIRM = {"confirm": {"action": "accept", "content": {"ok": True}}}


def _principal(agent: str, subject: str = "user") -> Principal:
    return Principal(
        subject=subject,
        agent_id=agent,
        delegating_user=subject,
        actors=(),
        scopes=frozenset(),
        audience=("https://gateway.example/everything/mcp",),
        expires_at=0.0,
        token_id=None,
        issuer="https://issuer.example",
    )


# -- the sealer ---------------------------------------------------------------------------------------


def test_a_sealed_state_opens_to_the_exact_original_only_for_its_principal_and_route() -> None:
    sealer = ContinuationSealer(os.urandom(32))
    alice, bob = _principal("agent-a"), _principal("agent-b")
    original = '{"round": 1, "note": "caf\\u00e9 \ud800"}'  # any string, even a lone surrogate, round-trips
    sealed = sealer.bound("everything", alice).seal(original)
    assert original not in sealed and sealed.isascii()
    assert sealer.bound("everything", alice).open(sealed) == original
    assert sealer.bound("everything", bob).open(sealed) is None  # another principal
    assert sealer.bound("other", alice).open(sealed) is None  # another route
    assert sealer.bound("everything", _principal("agent-a", subject="mallory")).open(sealed) is None
    assert ContinuationSealer(os.urandom(32)).bound("everything", alice).open(sealed) is None  # another key


@pytest.mark.parametrize("forged", ["request-state-nonce", "", "AAAA", None, 7, {"state": 1}, "\u00e9" * 40])
def test_anything_the_gateway_did_not_seal_does_not_open(forged: Any) -> None:
    assert ContinuationSealer(os.urandom(32)).bound("everything", _principal("agent-a")).open(forged) is None


def test_only_the_canonical_spelling_of_a_sealed_state_opens() -> None:
    bound = ContinuationSealer(os.urandom(32)).bound("everything", _principal("agent-a"))
    sealed = bound.seal("state")
    for spelling in spellings_of_the_same_bytes(sealed).values():
        assert bound.open(spelling) is None, spelling


# -- through the gateway (2026-07-28) -----------------------------------------------------------------


class IssuedStates:
    """ASGI middleware in front of the example upstream: every requestState it puts in a response body."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.states: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tapped_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                self.states += re.findall(r'"requestState":\s*"((?:[^"\\]|\\.)*)"', message.get("body", b"").decode())
            await send(message)

        await self.app(scope, receive, tapped_send)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    issued, sink = IssuedStates(build_app()), MemoryAuditSink()
    async with gateway_stack(tmp_path_factory.mktemp("continuations"), upstream_app=issued, audit=sink) as stack:
        stack.extra["issued"] = issued
        stack.extra["sink"] = sink
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


async def _result(response: httpx2.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        messages = [json.loads(e.data) async for e in read_events(response) if e.data]
        message = [m for m in messages if "id" in m][-1]
    else:
        message = response.json()
    assert "result" in message, message
    result: dict[str, Any] = message["result"]
    return result


async def _call(http: httpx2.AsyncClient, stack: Stack, token: str, tool: str, **params: Any) -> httpx2.Response:
    body = modern_call_body(tool)
    body["params"].update(params)
    return await http.post(stack.mcp_url(), headers=modern_headers(token, "tools/call", tool), json=body)


def _forwarded_states(stack: Stack, tool: str) -> list[Any]:
    return [c["params"].get("requestState") for c in stack.tap.calls("tools/call") if c["params"]["name"] == tool]


async def test_request_state_reaches_the_client_sealed_and_the_upstream_untouched(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    token = stack.token(client="agent-a")
    with anyio.fail_after(20):
        first = await _result(await _call(http, stack, token, TOOL))
        sealed = first["requestState"]
        assert first["resultType"] == "input_required" and "confirm" in first["inputRequests"]
        assert sealed != "request-state-nonce" and "request-state-nonce" not in json.dumps(first)
        done = await _result(await _call(http, stack, token, TOOL, inputResponses=CONFIRM, requestState=sealed))
    assert done["content"][0]["text"] == "state-ok: confirmation received"
    issued = json.loads(f'"{stack.extra["issued"].states[-1]}"')  # the upstream's own (SDK-sealed) state
    assert issued != sealed and issued not in json.dumps(first)
    assert _forwarded_states(stack, TOOL)[-1] == issued  # exactly what the upstream issued


async def test_another_principal_replaying_a_request_state_is_refused_and_nothing_is_forwarded(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    with anyio.fail_after(20):
        first = await _result(await _call(http, stack, stack.token(client="agent-a"), TOOL))
        before = len(stack.tap.requests)
        replay = await _call(
            http, stack, stack.token(client="agent-b"), TOOL, inputResponses=CONFIRM, requestState=first["requestState"]
        )
    assert replay.status_code == 400
    assert json_error(replay) == NOT_ISSUED
    assert len(stack.tap.requests) == before
    refusal = [r for r in stack.extra["sink"].records if r.event_type == "refusal"][-1]
    assert (refusal.agent_id, refusal.decision, refusal.policy_rule, refusal.http_status) == (
        "agent-b",
        "deny",
        "request_state",
        400,
    )


@pytest.mark.parametrize("state", ["request-state-nonce", "", 42, None, ["x"]])
async def test_a_request_state_the_gateway_did_not_relay_is_refused_and_nothing_is_forwarded(
    stack: Stack, http: httpx2.AsyncClient, state: Any
) -> None:
    # The upstream's raw state (as another gateway or the upstream itself would hand it out) is not ours.
    before = len(stack.tap.requests)
    with anyio.fail_after(20):
        response = await _call(http, stack, stack.token(), TOOL, inputResponses=CONFIRM, requestState=state)
    assert response.status_code == 400
    assert json_error(response) == NOT_ISSUED
    assert len(stack.tap.requests) == before


async def test_a_request_state_moved_to_another_tool_call_still_opens_only_for_its_principal(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    # Bound to principal and route, not to the tool: the upstream judges its own state for its own tool.
    with anyio.fail_after(20):
        rounds = [await _result(await _call(http, stack, stack.token(client="agent-a"), MULTI_ROUND))]
        for step, field in (("step1", "name"), ("step2", "color")):
            answer = {step: {"action": "accept", "content": {field: "Ada" if field == "name" else "green"}}}
            state = rounds[-1]["requestState"]
            token = stack.token(client="agent-a")
            rounds.append(
                await _result(await _call(http, stack, token, MULTI_ROUND, inputResponses=answer, requestState=state))
            )
    assert rounds[-1]["content"][0]["text"] == "Ada likes green."
    issued = [json.loads(f'"{state}"') for state in stack.extra["issued"].states[-2:]]
    assert _forwarded_states(stack, MULTI_ROUND)[-2:] == issued
    assert not {r.get("requestState") for r in rounds} & set(issued)


async def test_request_state_in_an_sse_response_is_sealed_too(tmp_path: Path, http: httpx2.AsyncClient) -> None:
    async def answer(scope: Any, receive: Any, send: Any, body: dict[str, Any]) -> None:
        await start_sse(send)
        state = body["params"].get("requestState")
        result = (
            {"resultType": "complete", "content": [{"type": "text", "text": f"got {state}"}]}
            if state
            else {"resultType": "input_required", "inputRequests": {}, "requestState": "upstream-state"}
        )
        await send_chunk(send, sse_message(progress_for(body, 1)))
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": body["id"], "result": result}), more=False)

    upstream = ScriptedUpstream(answer)
    async with gateway_stack(tmp_path, upstream_app=upstream) as stack:
        token = stack.token(client="agent-a")
        with anyio.fail_after(20):
            first = await _result(await _call(http, stack, token, "echo"))
            assert first["requestState"] != "upstream-state"
            done = await _result(await _call(http, stack, token, "echo", requestState=first["requestState"]))
            refused = await _call(
                http, stack, stack.token(client="agent-b"), "echo", requestState=first["requestState"]
            )
    assert done["content"][0]["text"] == "got upstream-state"
    assert json_error(refused) == NOT_ISSUED
    assert [b["params"].get("requestState") for b in upstream.bodies] == [None, "upstream-state"]
