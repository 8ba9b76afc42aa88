"""SECURITY.md: connections that send nothing are closed; concurrent connections are capped.

Every test runs the server `mcp-gateway serve` builds (uvicorn, httptools, the connection guard) on a
loopback port, in front of a real upstream and issuer, and attacks it with raw sockets.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.abc import SocketStream

from tests._stack import Stack, gateway_stack

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT = 1.0
IDLE = 0.5
# A close observed this much later than its deadline still passes: a loaded 2-core machine is slow.
SLACK = 3.0


def _limits(*, header: float = HEADER_TIMEOUT, idle: float = IDLE, cap: int = 1000) -> str:
    return f"header_timeout_seconds = {header}\nidle_connection_seconds = {idle}\nmax_connections = {cap}\n"


@asynccontextmanager
async def _front_door(tmp_path: Path, limits: str) -> AsyncIterator[Stack]:
    async with gateway_stack(tmp_path, gateway_extra=limits, front_door=True) as stack:
        yield stack


def _port(stack: Stack) -> int:
    return int(stack.base_url.rsplit(":", 1)[1])


async def _receive_until_closed(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray()
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return bytes(data)


async def _read_response(stream: SocketStream) -> tuple[int, bytes]:
    """One whole HTTP/1.1 response with a Content-Length, leaving the connection open."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += await stream.receive()
    return int(head.split(b" ", 2)[1]), body


def _metric(text: str, name: str) -> float:
    match = re.search(rf"(?m)^{re.escape(name)} (\S+)$", text)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def _metrics(stack: Stack) -> str:
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"{stack.base_url}/metrics")
    assert response.status_code == 200
    return response.text


async def test_connections_that_send_nothing_are_closed_while_normal_calls_keep_succeeding(tmp_path: Path) -> None:
    idle_count, loris_count = 300, 60
    async with _front_door(tmp_path, _limits()) as stack:
        port = _port(stack)
        closed_after: list[float] = []
        cut_after: list[tuple[float, bytes, int]] = []

        async def idle_connection() -> None:
            started = time.monotonic()
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                received = await _receive_until_closed(stream)
            assert received == b""  # an idle connection is closed without an answer
            closed_after.append(time.monotonic() - started)

        async def slow_loris() -> None:
            # A request head that keeps arriving, a few bytes at a time, and never ends.
            started = time.monotonic()
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                sent = 0

                async def keep_trickling() -> None:
                    nonlocal sent
                    while True:
                        await anyio.sleep(0.1)  # the attacker's pace, not a wait for the server
                        try:
                            await stream.send(b"X-Pad: a\r\n")
                        except (anyio.BrokenResourceError, OSError):
                            return
                        sent += 1

                async with anyio.create_task_group() as trickling:
                    trickling.start_soon(keep_trickling)
                    received = await _receive_until_closed(stream)
                    trickling.cancel_scope.cancel()
            cut_after.append((time.monotonic() - started, received, sent))

        # The task group ends when every attacker connection has been closed by the gateway.
        with anyio.fail_after(HEADER_TIMEOUT + SLACK + 20):
            async with anyio.create_task_group() as tg:
                for _ in range(idle_count):
                    tg.start_soon(idle_connection)
                for _ in range(loris_count):
                    tg.start_soon(slow_loris)
                # Meanwhile, the gateway keeps serving: health checks and a real MCP tool call.
                async with httpx2.AsyncClient() as client:
                    for _ in range(20):
                        assert (await client.get(f"{stack.base_url}/healthz")).status_code == 200
                async with stack.client(stack.token(["tools:read"])) as mcp:
                    result = await mcp.call_tool("echo", {"message": "still served"})
                assert result.content[0].text == "still served"  # type: ignore[union-attr]

        assert len(closed_after) == idle_count
        assert all(IDLE <= elapsed < IDLE + SLACK for elapsed in closed_after), sorted(closed_after)[-3:]
        assert len(cut_after) == loris_count
        for elapsed, received, sent in cut_after:
            assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + SLACK
            assert sent >= 3  # it was still sending when it was cut: trickled bytes do not extend the deadline
            assert received.startswith(b"HTTP/1.1 408 ")
            assert b"connection: close" in received

        metrics = await _metrics(stack)
        assert _metric(metrics, 'mcp_gateway_connections_closed_total{reason="header_timeout"}') == loris_count
        assert _metric(metrics, 'mcp_gateway_connections_closed_total{reason="idle"}') >= idle_count
        assert _metric(metrics, "mcp_gateway_connections_accepted_total") > idle_count + loris_count
        assert _metric(metrics, "mcp_gateway_connections_refused_total") == 0
        assert _metric(metrics, "mcp_gateway_connections_open") < 10  # the attackers' connections are gone


async def test_a_request_head_trickled_after_a_keep_alive_response_is_cut_at_the_header_timeout(
    tmp_path: Path,
) -> None:
    # uvicorn cancels its keep-alive timer on the first byte after a response and arms nothing else.
    async with _front_door(tmp_path, _limits(idle=30.0)) as stack:
        with anyio.fail_after(HEADER_TIMEOUT + SLACK + 10):
            async with await anyio.connect_tcp("127.0.0.1", _port(stack)) as stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert (await _read_response(stream))[0] == 200
                answered = time.monotonic()
                await stream.send(b"G")
                received = await _receive_until_closed(stream)
                elapsed = time.monotonic() - answered
        assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert json.loads(received.partition(b"\r\n\r\n")[2]) == {"error": "The request head did not arrive in time"}
        assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + SLACK
        metrics = await _metrics(stack)
        assert _metric(metrics, 'mcp_gateway_connections_closed_total{reason="header_timeout"}') == 1


async def test_a_keep_alive_connection_left_idle_after_its_response_is_closed(tmp_path: Path) -> None:
    async with _front_door(tmp_path, _limits(header=30.0)) as stack:
        with anyio.fail_after(IDLE + SLACK + 10):
            async with await anyio.connect_tcp("127.0.0.1", _port(stack)) as stream:
                for _ in range(3):  # a connection in use is not idle
                    await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    assert (await _read_response(stream))[0] == 200
                answered = time.monotonic()
                received = await _receive_until_closed(stream)
                elapsed = time.monotonic() - answered
        assert received == b""
        assert IDLE - 0.1 <= elapsed < IDLE + SLACK


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/everything/mcp", 400),  # the gateway parses the whole body: its JSON-RPC error names id 1
        ("/nowhere", 404),  # answered before the body ends: the rest still arrives
    ],
)
async def test_a_request_whose_body_takes_longer_than_the_deadlines_is_not_cut(
    tmp_path: Path, path: str, status: int
) -> None:
    # The deadlines guard the wait for a request head; once a head is complete, the request is the app's.
    async with _front_door(tmp_path, _limits(header=0.3, idle=0.3)) as stack:
        with anyio.fail_after(15):
            async with await anyio.connect_tcp("127.0.0.1", _port(stack)) as stream:
                body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}'
                await stream.send(
                    b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                    b"accept: application/json, text/event-stream\r\ncontent-length: %d\r\n\r\n"
                    % (path.encode(), _port(stack), len(body))
                )
                for index in range(0, len(body), 4):  # ~1 s of trickled body, past both deadlines
                    await anyio.sleep(0.05)  # the client's pace, not a wait for the server
                    await stream.send(body[index : index + 4])
                answer = await _read_response(stream)
                assert answer[0] == status, answer
                assert (b'"id":1' in answer[1]) is (status == 400)
                # With the request over, the connection is idle again, and closed as such.
                assert await _receive_until_closed(stream) == b""


async def test_connections_past_the_cap_are_refused_with_503_and_retry_after(tmp_path: Path) -> None:
    cap = 20
    async with _front_door(tmp_path, _limits(header=30.0, idle=30.0, cap=cap)) as stack, AsyncExitStack() as held:
        port = _port(stack)
        with anyio.fail_after(20):
            streams = []
            for _ in range(cap):  # each one proves it was accepted by getting an answer, then stays open
                stream = await held.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert (await _read_response(stream))[0] == 200
                streams.append(stream)

            async with httpx2.AsyncClient() as client:
                refused = await client.get(f"{stack.base_url}/healthz")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["connection"] == "close"
            assert refused.json() == {"error": "Too many open connections to this gateway process; retry later"}

            async with await anyio.connect_tcp("127.0.0.1", port) as raw:  # answered even if it sends nothing
                answer = await _receive_until_closed(raw)
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")

            # The held connections still work, and one closed makes room for a new one.
            await streams[0].send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await _read_response(streams[0]))[0] == 200
            await streams[-1].aclose()
            async with httpx2.AsyncClient() as client:
                refusals = 2
                while (await client.get(f"{stack.base_url}/healthz")).status_code == 503:
                    refusals += 1  # until the server has seen the close: bounded by fail_after
            await held.aclose()
            metrics = await _metrics(stack)
        assert _metric(metrics, "mcp_gateway_connections_refused_total") == refusals
        assert _metric(metrics, "mcp_gateway_connections_max") == cap
        assert _metric(metrics, "mcp_gateway_connections_open") <= cap
