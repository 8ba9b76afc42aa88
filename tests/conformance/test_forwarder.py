"""The bearer forwarder adds the token, leaves forged headers alone, streams, and passes disconnects on."""

from __future__ import annotations

import json
import socket

import anyio
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from tests._servers import serve_asgi
from tests.conformance.forwarder import bearer_forwarder, rewrite_request_head

pytestmark = pytest.mark.anyio
TIMEOUT = 10


def test_the_token_replaces_any_authorization_and_the_connection_closes() -> None:
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nAuthorization: Basic eA==\r\nConnection: keep-alive"
    rewritten = rewrite_request_head(head, token="t0k", own_authority="127.0.0.1:5000", target_authority="gw:8000")
    assert rewritten.split(b"\r\n") == [
        b"POST /mcp HTTP/1.1",
        b"Host: gw:8000",
        b"Authorization: Bearer t0k",
        b"Connection: close",
    ]


def test_forged_host_and_origin_and_odd_values_pass_untouched() -> None:
    head = b"POST /mcp HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\nMcp-Name:  echo  "
    rewritten = rewrite_request_head(head, token="t", own_authority="127.0.0.1:5000", target_authority="gw:8000")
    assert rewritten.split(b"\r\n")[:4] == head.split(b"\r\n")


def test_an_origin_naming_the_forwarder_is_rewritten_to_name_the_target() -> None:
    head = b"GET /mcp HTTP/1.1\r\nOrigin: http://127.0.0.1:5000"
    rewritten = rewrite_request_head(head, token="t", own_authority="127.0.0.1:5000", target_authority="gw:8000")
    assert b"Origin: http://gw:8000" in rewritten.split(b"\r\n")


class _Upstream:
    """A raw ASGI app: ``/headers`` echoes the request headers; ``/stream`` sends an SSE event, waits, sends another."""

    def __init__(self) -> None:
        self.release_second_event = anyio.Event()
        self.client_disconnected = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/headers":
            body = json.dumps({k.decode(): v.decode() for k, v in scope["headers"]}).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        async with anyio.create_task_group() as tg:

            async def second_event() -> None:
                await self.release_second_event.wait()
                await send({"type": "http.response.body", "body": b"data: second\n\n"})
                tg.cancel_scope.cancel()

            tg.start_soon(second_event)
            while (await receive())["type"] != "http.disconnect":
                pass
            self.client_disconnected.set()
            tg.cancel_scope.cancel()


async def test_requests_reach_the_target_with_the_token_and_the_clients_host() -> None:
    async with serve_asgi(_Upstream()) as base, bearer_forwarder(f"{base}/headers", "s3cret") as url:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient() as http:
                honest = (await http.get(url, headers={"Authorization": "Bearer client-token"})).json()
                forged = (await http.get(url, headers={"Host": "evil.example"})).json()
    assert honest["authorization"] == "Bearer s3cret"
    assert honest["host"] == base.split("/")[2]
    assert forged["host"] == "evil.example"


async def test_a_stream_is_relayed_as_it_is_produced() -> None:
    upstream = _Upstream()
    async with serve_asgi(upstream) as base, bearer_forwarder(f"{base}/stream", "t") as url:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient() as http, http.stream("GET", url) as response:
                lines = response.aiter_lines()
                assert await anext(lines) == "data: first"  # arrives while the second event is still held back
                upstream.release_second_event.set()
                assert [line async for line in lines if line] == ["data: second"]


async def test_a_client_that_disconnects_disconnects_the_target_too() -> None:
    upstream = _Upstream()
    async with serve_asgi(upstream) as base, bearer_forwarder(f"{base}/stream", "t") as url:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient() as http, http.stream("GET", url) as response:
                assert await anext(response.aiter_lines()) == "data: first"
            await upstream.client_disconnected.wait()


async def test_an_unreachable_target_gets_502() -> None:
    with socket.socket() as placeholder:  # a port that was free a moment ago and has no listener now
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    async with bearer_forwarder(f"http://127.0.0.1:{port}/mcp", "t") as url:
        with anyio.fail_after(TIMEOUT):
            async with httpx2.AsyncClient() as http:
                response = await http.get(url)
    assert response.status_code == 502
