"""What the hot path saves must not change what it does: coalesced SSE writes, cached session opens,
audit off without records, and metrics labelled without wrapping `send`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sink import NullAuditSink
from mcp_gateway.config import ServerEntry
from mcp_gateway.errors import SessionNotFound
from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.scopes import ScopeHierarchy
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.sessions import SessionClaims, SessionSealer, principal_fingerprint
from mcp_gateway.proxy.streaming import RelayOptions, relay_response
from mcp_gateway.upstream import UpstreamPool
from tests._mcp import HANDSHAKE, modern_headers, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import call_body, modern_call_body, parse_events

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
ALICE = principal_fingerprint("issuer|agent-a|user-a")
BOB = principal_fingerprint("issuer|agent-b|user-b")


# -- sealed ids: the cache of opened ids answers exactly what the AEAD answers ------------------------


def test_an_id_opened_before_opens_to_the_same_claims() -> None:
    sealer = SessionSealer(KEY)
    claims = SessionClaims("everything", "upstream-1", ALICE, 1_700_000_000)
    sealed = sealer.seal(claims)
    assert sealer.open(sealed, server="everything", principal=ALICE) == claims
    assert sealer.open(sealed, server="everything", principal=ALICE) == claims


def test_an_id_opened_by_its_owner_still_refuses_everyone_else_and_every_other_route() -> None:
    sealer = SessionSealer(KEY)
    sealed = sealer.seal(SessionClaims("everything", "upstream-1", ALICE, 0))
    sealer.open(sealed, server="everything", principal=ALICE)
    with pytest.raises(SessionNotFound):
        sealer.open(sealed, server="everything", principal=BOB)
    with pytest.raises(SessionNotFound):
        sealer.open(sealed, server="other", principal=ALICE)
    assert sealer.open(sealed, server="everything", principal=ALICE).principal == ALICE


def test_a_refused_open_is_not_remembered() -> None:
    sealer = SessionSealer(KEY)
    sealed = sealer.seal(SessionClaims("everything", "upstream-1", ALICE, 0))
    with pytest.raises(SessionNotFound):
        sealer.open(sealed, server="everything", principal=BOB)
    assert sealer.open(sealed, server="everything", principal=ALICE).upstream_session_id == "upstream-1"
    with pytest.raises(SessionNotFound):
        sealer.open(sealed, server="everything", principal=BOB)


def test_event_ids_of_one_session_tag_alike_however_often_they_are_asked_for() -> None:
    sealer = SessionSealer(KEY)
    claims = SessionClaims("everything", "upstream-1", ALICE, 0)
    first = sealer.event_ids(claims).tag(b"7")
    assert sealer.event_ids(claims).tag(b"7") == first
    assert SessionSealer(KEY).event_ids(claims).untag(first) == b"7"
    assert sealer.event_ids(SessionClaims("everything", "upstream-2", ALICE, 0)).untag(first) is None


# -- SSE relay: one write per upstream read, the end of the stream with its last events ---------------


ENTRY = ServerEntry(name="everything", url="http://127.0.0.1:1/mcp", default_scopes=("tools:call",))
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
PRIMING = b"id: 1\ndata: \n\n"
ANSWER = b'event: message\nid: 2\ndata: {"jsonrpc":"2.0","id":5,"result":{"content":[],"isError":false}}\n\n'


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


Script = Callable[[asyncio.StreamWriter, asyncio.Queue[None]], Awaitable[None]]


@contextlib.asynccontextmanager
async def _upstream(script: Script, relayed: asyncio.Queue[None]) -> AsyncIterator[UpstreamPool]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            await script(writer, relayed)
            await reader.read()  # until the pool hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    pool = UpstreamPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp", read_timeout=5)
    try:
        yield pool
    finally:
        await pool.aclose()
        server.close()


async def _relay(script: Script) -> tuple[list[dict[str, Any]], StreamState]:
    sent: list[dict[str, Any]] = []
    relayed: asyncio.Queue[None] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            relayed.put_nowait(None)

    policy = ServerPolicy.from_entry(ENTRY, ScopeHierarchy({}))
    state = StreamState(request_id=5, request_method="tools/call")
    options = RelayOptions(
        max_event_bytes=65536,
        max_body_bytes=65536,
        session_sent=False,
        seal=None,
        resumable=True,
        reject_server_request=None,
    )
    judge = UpstreamMessageJudge(policy, frozenset(), governs_server_requests=True)

    async with _upstream(script, relayed) as pool:
        response = await pool.request("POST", "/mcp", [(b"content-type", b"application/json")], b"{}")
        await relay_response(response, send=send, judge=judge, state=state, options=options)
    return sent, state


async def test_events_that_arrive_together_leave_in_one_write_that_ends_the_response() -> None:
    async def at_once(writer: asyncio.StreamWriter, relayed: asyncio.Queue[None]) -> None:
        writer.write(HEAD + _chunk(PRIMING) + _chunk(ANSWER) + b"0\r\n\r\n")
        await writer.drain()

    with anyio.fail_after(5):
        sent, state = await _relay(at_once)
    assert state.answered
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    body = sent[1]
    assert body["more_body"] is False
    assert body["body"].startswith(b"id: 1\n") and b'"id":5' in body["body"]


async def test_events_are_not_held_back_waiting_for_the_next_read() -> None:
    async def in_steps(writer: asyncio.StreamWriter, relayed: asyncio.Queue[None]) -> None:
        # Each piece is written only once the gateway has relayed the one before: nothing waits for more.
        for piece in (HEAD + _chunk(PRIMING), _chunk(ANSWER), b"0\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await relayed.get()

    with anyio.fail_after(5):
        sent, state = await _relay(in_steps)
    assert state.answered
    bodies = [(m["body"], m.get("more_body", False)) for m in sent[1:]]
    assert bodies[0] == (b"id: 1\ndata: \n\n", True)
    assert bodies[1][0].startswith(b"event: message\nid: 2\n") and bodies[1][1] is True
    assert bodies[2:] == [(b"", False)]


# -- audit off: no records are built, and the exchange is the same ------------------------------------


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with gateway_stack(tmp_path_factory.mktemp("hot-path"), audit=NullAuditSink()) as stack:
        yield stack


async def test_with_audit_off_calls_in_both_eras_and_refusals_are_answered_as_with_audit_on(stack: Stack) -> None:
    token = stack.token(["tools:read"])
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            modern = await http.post(
                stack.mcp_url(),
                headers=modern_headers(token, "tools/call", "echo"),
                json=modern_call_body("echo", {"message": "off"}),
            )
            session = await open_session(http, stack.mcp_url(), token)
            legacy = await http.post(
                stack.mcp_url(),
                headers=post_headers(token, version=HANDSHAKE, session=session),
                json=call_body("echo", {"message": "legacy"}),
            )
            refused = await http.post(
                stack.mcp_url(), headers=post_headers(None, version=HANDSHAKE), json=call_body("echo", {})
            )
            metrics = await http.get(f"{stack.base_url}/metrics")
    assert modern.status_code == 200
    assert modern.json()["result"]["isError"] is False
    assert legacy.status_code == 200
    messages = [event.message() for event in parse_events(legacy.text) if event.data]
    assert [m["result"]["content"][0]["text"] for m in messages if "result" in m] == ["legacy"]
    assert refused.status_code == 401, refused.text
    assert 'mcp_gateway_requests_total{method="POST",server="everything",status="200"}' in metrics.text
    assert 'mcp_gateway_requests_total{method="POST",server="everything",status="401"} 1.0' in metrics.text
