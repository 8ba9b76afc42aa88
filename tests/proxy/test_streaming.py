"""Streams flow through as they arrive, and a dropped client cancels upstream work only in 2026-07-28."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.proxy.streaming import DisconnectWatch
from tests._mcp import HANDSHAKE, initialize_body, modern_headers, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import (
    Receive,
    Scope,
    Script,
    Send,
    WatchedAuditSink,
    answer_lifespan,
    modern_call_body,
    progress_for,
    read_body,
    read_events,
    result_for,
    send_chunk,
    send_raw,
    sse_message,
    start_sse,
    wait_for_disconnect,
)

pytestmark = pytest.mark.anyio


# -- DisconnectWatch on its own --------------------------------------------------------------------


class FakeClient:
    """receive/send of one request whose client disconnects when the test says so."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.on_disconnect: Callable[[], None] = lambda: None
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        self.on_disconnect()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_client_disconnect_cancels_the_watched_work_and_only_that() -> None:
    client = FakeClient()
    reached_end = False
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, client.send) as watch:
            client.gone.set()
            await asyncio.Event().wait()  # the upstream that never answers
            reached_end = True
    assert watch.disconnected
    assert not reached_end
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_disconnect_after_the_response_completed_cancels_nothing() -> None:
    # uvicorn reports http.disconnect as soon as a response is complete, while the handler still runs.
    client = FakeClient()
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, client.send) as watch:
            await watch.send({"type": "http.response.start", "status": 200, "headers": []})
            await watch.send({"type": "http.response.body", "body": b"{}", "more_body": False})
            client.gone.set()
            await anyio.wait_all_tasks_blocked()  # the watcher has seen the disconnect by now
            finished = True
    assert finished
    assert not watch.disconnected
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]


async def test_outside_cancellation_arriving_with_a_disconnect_is_not_swallowed() -> None:
    client = FakeClient()

    async def handler() -> None:
        async with DisconnectWatch(client.receive, client.send):
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(handler())
    client.on_disconnect = task.cancel  # a shutdown cancels the task just as the client leaves
    await anyio.wait_all_tasks_blocked()
    client.gone.set()
    with anyio.fail_after(5), pytest.raises(asyncio.CancelledError):
        await task


class Upstream:
    """A scripted upstream: initialize opens a session; each tool, and GET, runs the script a test installed."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.received: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        raw = await read_body(receive) if scope["method"] == "POST" else b""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.received.append((scope["method"], headers, raw))
        body = json.loads(raw) if raw else {}
        if body.get("method") == "initialize":
            answer = {"jsonrpc": "2.0", "id": body["id"], "result": {"protocolVersion": HANDSHAKE}}
            await send_raw(send, 200, json.dumps(answer).encode(), headers=[(b"mcp-session-id", b"upstream-session")])
            return
        key = scope["method"] if scope["method"] != "POST" else body.get("params", {}).get("name", body.get("method"))
        if scope["method"] == "POST" and "method" not in body:
            key = "response"  # the client's answer to a server-to-client request
        await self.scripts[key](scope, receive, send, body)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    upstream = Upstream()
    audit = WatchedAuditSink()
    async with gateway_stack(tmp_path_factory.mktemp("streaming"), upstream_app=upstream, audit=audit) as stack:
        stack.extra.update(upstream=upstream, audit=audit)
        yield stack


def install(stack: Stack, name: str, script: Script) -> None:
    stack.extra["upstream"].scripts[name] = script


async def test_sse_events_reach_the_client_before_the_upstream_finishes(stack: Stack) -> None:
    release = anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await start_sse(send)
        await send_chunk(send, sse_message(progress_for(body, 1)))
        await release.wait()  # only the test, having seen the first event, lets the call finish
        await send_chunk(send, sse_message(result_for(body, "finished")), more=False)

    install(stack, "slow", slow)
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream(
                "POST",
                stack.mcp_url(),
                headers=modern_headers(stack.token(), "tools/call", "slow"),
                json=modern_call_body("slow"),
            ) as response:
                events = read_events(response)
                first = await anext(events)
                assert first.message()["method"] == "notifications/progress"
                release.set()
                second = await anext(events)
    assert second.message() == result_for({"id": 1}, "finished")


async def test_dropping_a_2026_07_28_stream_cancels_the_upstream_request(stack: Stack) -> None:
    audit: WatchedAuditSink = stack.extra["audit"]
    upstream_saw_disconnect = anyio.Event()

    async def endless(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await start_sse(send)
        await send_chunk(send, sse_message(progress_for(body, 1)))
        await wait_for_disconnect(receive)
        upstream_saw_disconnect.set()

    install(stack, "endless", endless)
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream(
                "POST",
                stack.mcp_url(),
                headers=modern_headers(stack.token(), "tools/call", "endless"),
                json=modern_call_body("endless"),
            ) as response:
                first = await anext(read_events(response))
            # Leaving the block closed the connection mid-stream: MCP 2026-07-28 says that is cancellation.
            await upstream_saw_disconnect.wait()
            (outcome,) = await audit.wait_for(lambda r: r.tool == "endless" and r.phase == "outcome")
    assert first.message()["method"] == "notifications/progress"
    assert (outcome.outcome, outcome.http_status) == ("aborted", 499)


async def _open_session(http: httpx2.AsyncClient, stack: Stack, token: str) -> str:
    response = await http.post(stack.mcp_url(), headers=post_headers(token), json=initialize_body())
    assert response.status_code == 200
    session: str = response.headers["mcp-session-id"]
    return session


async def test_standalone_get_stream_relays_notifications_and_server_requests_but_no_responses(stack: Stack) -> None:
    async def get_stream(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await start_sse(send)
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": 1, "result": {"leaked": True}}, event_id="1"))
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, "2"))
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": 5, "method": "roots/list"}, event_id="3"))
        await send_chunk(send, b"", more=False)

    async def accepted(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await send_raw(send, 202, b"", content_type=None)

    install(stack, "GET", get_stream)
    install(stack, "response", accepted)
    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            session = await _open_session(http, stack, token)
            headers = {**post_headers(token, version=HANDSHAKE, session=session), "accept": "text/event-stream"}
            async with http.stream("GET", stack.mcp_url(), headers=headers) as response:
                events = [event async for event in read_events(response)]
            relayed = [(upstream_id(event.id), event.message()) for event in events if event.data]
            # Issue 11: the server request's id reaches the client as a tag bound to this session (it used
            # to be the upstream's 5); the client's answer to the tag reaches the upstream with id 5 again.
            tag = relayed[1][1]["id"]
            answer = {"jsonrpc": "2.0", "id": tag, "result": {"roots": []}}
            answered = await http.post(
                stack.mcp_url(), headers=post_headers(token, version=HANDSHAKE, session=session), json=answer
            )
    assert response.status_code == 200
    assert relayed == [
        ("2", {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
        ("3", {"jsonrpc": "2.0", "id": tag, "method": "roots/list"}),
    ]
    assert isinstance(tag, str) and tag.startswith("mcpgw-")
    assert answered.status_code == 202
    method, upstream_headers, raw = stack.extra["upstream"].received[-1]
    assert (method, json.loads(raw)) == ("POST", {"jsonrpc": "2.0", "id": 5, "result": {"roots": []}})
    # The upstream saw its own session id, not the gateway's.
    assert upstream_headers["mcp-session-id"] == "upstream-session"


async def _event_ids_of_a_get_stream(http: httpx2.AsyncClient, stack: Stack, token: str, session: str) -> list[str]:
    async def numbered(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await start_sse(send)
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "method": "notifications/message"}, event_id="7"))
        await send_chunk(send, b"", more=False)

    install(stack, "GET", numbered)
    headers = {**post_headers(token, version=HANDSHAKE, session=session), "accept": "text/event-stream"}
    async with http.stream("GET", stack.mcp_url(), headers=headers) as response:
        return [event.id async for event in read_events(response) if event.id is not None]


def upstream_id(tagged: str | None) -> str:
    """The upstream's event id inside one the gateway relayed (`<id>.<tag>`)."""
    assert tagged is not None
    event_id, dot, tag = tagged.rpartition(".")
    assert dot and len(tag) == 16
    return event_id


async def test_resumed_get_stream_relays_the_response_it_replays_and_ends_there(stack: Stack) -> None:
    async def replay(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await start_sse(send)
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": 3, "result": {"replayed": True}}, "8"))
        # What a store filing events by request id alone replays next: another session's request 3.
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "method": "notifications/message"}, "9"))
        await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": 3, "result": {"someone": "else"}}, "10"))
        await wait_for_disconnect(receive)

    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            session = await _open_session(http, stack, token)
            (seen,) = await _event_ids_of_a_get_stream(http, stack, token, session)
            install(stack, "GET", replay)
            headers = {
                **post_headers(token, version=HANDSHAKE, session=session),
                "accept": "text/event-stream",
                "last-event-id": seen,
            }
            async with http.stream("GET", stack.mcp_url(), headers=headers) as response:
                events = [event async for event in read_events(response)]
    # The stream ends with the response it replays: nothing after it is this stream's.
    assert [event.message() for event in events if event.data] == [
        {"jsonrpc": "2.0", "id": 3, "result": {"replayed": True}}
    ]
    # The upstream sees its own event id back, without the gateway's tag.
    assert stack.extra["upstream"].received[-1][1]["last-event-id"] == "7"


@pytest.mark.parametrize("whose", ["another principal's session", "no session (untagged)"])
async def test_last_event_id_not_issued_in_this_session_is_400_and_not_forwarded(stack: Stack, whose: str) -> None:
    alice, bob = stack.token(client="agent-a"), stack.token(client="agent-b")
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            alice_session = await _open_session(http, stack, alice)
            (alices,) = await _event_ids_of_a_get_stream(http, stack, alice, alice_session)
            bob_session = await _open_session(http, stack, bob)
            forwarded = len(stack.extra["upstream"].received)
            headers = {
                **post_headers(bob, version=HANDSHAKE, session=bob_session),
                "accept": "text/event-stream",
                "last-event-id": alices if whose.startswith("another") else upstream_id(alices),
            }
            response = await http.get(stack.mcp_url(), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": -32600,
        "message": "Bad Request: Last-Event-ID was not issued in this session",
    }
    assert len(stack.extra["upstream"].received) == forwarded


async def test_priming_event_and_keep_alives_are_relayed_without_their_text(stack: Stack) -> None:
    async def primed(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        await start_sse(send)
        await send_chunk(send, b"id: 41\r\nretry: 100\r\ndata: \r\n\r\n: ping - upstream internals\r\n\r")
        await send_chunk(send, b"\n" + sse_message(result_for(body), event_id="42"), more=False)

    install(stack, "primed", primed)
    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            session = await _open_session(http, stack, token)
            response = await http.post(
                stack.mcp_url(),
                headers=post_headers(token, version=HANDSHAKE, session=session),
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "primed"}},
            )
    assert response.status_code == 200
    priming, keep_alive, answer, _ = response.text.split("\n\n")
    priming_id = priming.splitlines()[0].removeprefix("id: ")
    assert priming.splitlines()[1:] == ["retry: 100", "data: "]
    assert upstream_id(priming_id) == "41"
    assert keep_alive == ":"
    event, answer_id, data = answer.splitlines()
    assert (event, upstream_id(answer_id.removeprefix("id: ")), data) == (
        "event: message",
        "42",
        f"data: {json.dumps(result_for({'id': 2}))}",
    )
