"""Issue 11 class 1, client responses: a response is forwarded only if it answers a server-to-client request
the gateway relayed in this session (SECURITY.md "A governed method is judged whatever its shape", and
"Identifiers the gateway issues have one accepted spelling")."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp.client.session import ClientRequestContext

from examples.everything_server import build_app
from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.proxy.server_request_ids import ServerRequestIdSealer
from mcp_gateway.proxy.sessions import SessionClaims
from tests._mcp import HANDSHAKE, open_session, post_headers
from tests._servers import serve_asgi
from tests._stack import DEFAULT_ALLOWLIST, Stack, UpstreamTap, gateway_stack
from tests.proxy._support import (
    EarlyTap,
    Event,
    call_body,
    json_error,
    read_events,
    sdk_client,
    spellings_of_the_same_bytes,
)

pytestmark = pytest.mark.anyio

NOT_RELAYED = {
    "code": -32600,
    "message": "Invalid Request: the response answers no request the gateway relayed in this session",
}
SESSION = SessionClaims("everything", "upstream-session", "a" * 64, 1_700_000_000)


# -- the tags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("original", [0, 5, -3, 2**62, "5", "", "req-\u00e9\ud800"])
def test_a_tagged_id_opens_to_the_original_with_its_json_type_only_in_its_session(original: str | int) -> None:
    sealer = ServerRequestIdSealer(os.urandom(32))
    tag = sealer.bound(SESSION).tag(original)
    assert tag.startswith("mcpgw-") and tag.isascii()
    assert tag != sealer.bound(SESSION).tag(original)  # a fresh nonce each time: equal ids do not look equal
    opened = sealer.bound(SESSION).open(tag)
    assert opened == original and type(opened) is type(original)  # an integer stays an integer
    others = {
        "another principal": SessionClaims("everything", "upstream-session", "b" * 64, SESSION.created),
        "another route": SessionClaims("other", "upstream-session", "a" * 64, SESSION.created),
        "another upstream session": SessionClaims("everything", "upstream-2", "a" * 64, SESSION.created),
        "another session created later": SessionClaims("everything", "upstream-session", "a" * 64, SESSION.created + 1),
    }
    for why, claims in others.items():
        assert sealer.bound(claims).open(tag) is None, why
    assert ServerRequestIdSealer(os.urandom(32)).bound(SESSION).open(tag) is None  # another key


@pytest.mark.parametrize("forged", [5, "5", None, True, 1.5, "mcpgw-", "mcpgw-AAAA", "mcpgw-" + "A" * 2000, {"id": 5}])
def test_anything_the_gateway_did_not_tag_does_not_open(forged: Any) -> None:
    assert ServerRequestIdSealer(os.urandom(32)).bound(SESSION).open(forged) is None


def test_only_the_canonical_spelling_of_a_tag_opens() -> None:
    bound = ServerRequestIdSealer(os.urandom(32)).bound(SESSION)
    tag = bound.tag(7)
    for kind, spelling in spellings_of_the_same_bytes(tag[6:]).items():
        assert bound.open("mcpgw-" + spelling) is None, kind
    assert bound.open("MCPGW-" + tag[6:]) is None


# -- through the gateway (handshake era) ----------------------------------------------------------------


@dataclass
class World:
    stack: Stack
    early: EarlyTap
    other_tap: UpstreamTap
    sink: MemoryAuditSink
    http: httpx2.AsyncClient

    def forwarded(self) -> int:
        return len(self.stack.tap.requests) + len(self.other_tap.requests)

    def refusals(self) -> list[AuditRecord]:
        return [r for r in self.sink.records if r.event_type == "refusal" and r.policy_rule == "server_request_id"]


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    early, other_tap, sink = EarlyTap(build_app()), UpstreamTap(build_app()), MemoryAuditSink()
    async with serve_asgi(other_tap) as other:
        allowlist = DEFAULT_ALLOWLIST + f'\n[servers.other]\nurl = "{other}/mcp"\ndefault_scopes = ["tools:call"]\n'
        async with (
            gateway_stack(
                tmp_path_factory.mktemp("server-request-ids"), allowlist=allowlist, upstream_app=early, audit=sink
            ) as stack,
            httpx2.AsyncClient(timeout=10) as http,
        ):
            yield World(stack, early, other_tap, sink, http)


@contextmanager
def nothing_forwarded(world: World) -> Iterator[None]:
    before = world.forwarded()
    yield
    assert world.forwarded() == before


def _answer(request_id: Any, text: str = "yes") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"role": "assistant", "content": {"type": "text", "text": text}, "model": "m"},
    }


async def _next_message(events: AsyncIterator[Event]) -> dict[str, Any]:
    async for event in events:
        if event.data:
            return event.message()
    raise AssertionError("the stream ended without a message")


async def _refused(world: World, url: str, token: str, session: str, answer: dict[str, Any]) -> None:
    refusals = len(world.refusals())
    with nothing_forwarded(world):
        response = await world.http.post(
            url, headers=post_headers(token, version=HANDSHAKE, session=session), json=answer
        )
    assert response.status_code == 400
    assert json_error(response) == NOT_RELAYED
    assert response.json()["id"] is None
    (record,) = world.refusals()[refusals:]  # the refusal is audited, once
    assert (record.decision, record.http_status, record.session_id) == ("deny", 400, session)


async def test_forged_and_foreign_response_ids_are_refused_unforwarded_and_the_real_answer_goes_through(
    world: World,
) -> None:
    stack, http = world.stack, world.http
    alice, bob = stack.token(client="agent-a"), stack.token(client="agent-b")
    with anyio.fail_after(20):
        session = await open_session(http, stack.mcp_url(), alice)
        bobs = await open_session(http, stack.mcp_url(), bob)
        alice_other = stack.token(client="agent-a", resource=stack.mcp_url("other"))
        other_session = await open_session(http, stack.mcp_url("other"), alice_other)
        headers = post_headers(alice, version=HANDSHAKE, session=session)
        body = call_body("ask_model", {"prompt": "still there?"}, request_id=9)
        async with http.stream("POST", stack.mcp_url(), headers=headers, json=body) as stream:
            events = read_events(stream)
            request = await _next_message(events)
            assert request["method"] == "sampling/createMessage"
            tag = request["id"]
            assert isinstance(tag, str) and tag.startswith("mcpgw-")
            upstream_ids = [0, 1, 2, "0", tag[6:], "mcpgw-" + "A" * 40]
            # Forged: the upstream's own guessable ids, re-spelled or made-up tags.
            for forged in upstream_ids + ["mcpgw-" + s for s in spellings_of_the_same_bytes(tag[6:]).values()]:
                await _refused(world, stack.mcp_url(), alice, session, _answer(forged, "forged"))
            # Another principal, in their own session, answering with alice's tag.
            await _refused(world, stack.mcp_url(), bob, bobs, _answer(tag, "bob"))
            # The same principal on another route.
            await _refused(world, stack.mcp_url("other"), alice_other, other_session, _answer(tag, "other route"))
            answered = await http.post(stack.mcp_url(), headers=headers, json=_answer(tag))
            assert answered.status_code == 202
            rest = [e.message() async for e in events if e.data]
    assert rest[-1]["result"]["content"][0]["text"] == "model said: yes"
    # The upstream got exactly one answer, the real one, under its own id (an integer, as it sent it).
    (answer,) = [m for m in world.early.messages if "method" not in m]
    assert answer["result"]["content"]["text"] == "yes"
    assert isinstance(answer["id"], int) and not isinstance(answer["id"], bool)
    # Responses are not audited when forwarded; every refused one was.
    assert all(r.event_type == "refusal" for r in world.sink.records if r.method is None and r.phase == "event")


async def test_the_sdk_client_answers_a_sampling_request_through_the_gateway_and_the_upstream_gets_it(
    world: World,
) -> None:
    seen: list[str] = []

    async def sample(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        seen.append(params.messages[0].content.text)  # type: ignore[union-attr]
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="m")

    before = len(world.early.messages)
    with anyio.fail_after(20):
        async with sdk_client(world.stack, world.stack.token(), mode="legacy", sampling_callback=sample) as client:
            result = await client.call_tool("ask_model", {"prompt": "the answer?"})
    assert seen == ["the answer?"]
    assert result.content[0].text == "model said: 42"  # type: ignore[union-attr]
    answers = [m for m in world.early.messages[before:] if "method" not in m]
    (answer,) = answers
    assert answer["result"]["content"] == {"type": "text", "text": "42"}
    # The SDK client answered the tag; the upstream received its own integer id back.
    assert isinstance(answer["id"], int) and not isinstance(answer["id"], bool)
