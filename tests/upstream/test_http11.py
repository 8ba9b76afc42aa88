"""The upstream pool against real loopback servers that answer with scripted raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import trustme

from mcp_gateway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamIdentityError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from mcp_gateway.upstream import UpstreamPool, UpstreamResponse

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
JSON = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]


@pytest.fixture(
    scope="module",
    params=[pytest.param(("asyncio", {}), id="asyncio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


# -- a scripted upstream ----------------------------------------------------------------------------------------


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, server: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> bytes | None:
        """One whole request (head and Content-Length body), or None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError):
                self.server.received += exc.partial
            return None
        match = re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.IGNORECASE)
        body = await self.reader.readexactly(int(match.group(1))) if match else b""
        self.server.received += head + body
        self.server.requests.append(head + body)
        await self.server.notify()
        return head + body

    async def send(self, *pieces: bytes) -> None:
        """Write each piece separately, draining in between."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()

    async def wait_eof(self) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await self.reader.read(65536):
                self.server.received += data


Script = Callable[[Peer], Awaitable[None]]


class Upstream:
    """A loopback server running `script` on every connection and recording what it was sent."""

    def __init__(self, script: Script, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.accepted = 0
        self.finished = 0  # connections whose script ended and whose socket was closed
        self.received = bytearray()
        self.requests: list[bytes] = []
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str = "/mcp") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        await self.notify()
        try:
            await self.script(Peer(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # torn down by __aexit__; a cancelled handler task would make asyncio.streams log an error
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()
            self.finished += 1
            self._tasks.discard(task)
            with contextlib.suppress(asyncio.CancelledError):
                await self.notify()


def replay(*responses: bytes, then_close: bool = False) -> Script:
    """Answer each request on a connection with the next response, then wait for the client to hang up."""

    async def script(peer: Peer) -> None:
        for response in responses:
            if await peer.read_request() is None:
                return
            await peer.send(response)
        if not then_close:
            await peer.wait_eof()

    return script


def keep_answering(response: bytes) -> Script:
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(response)

    return script


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@contextlib.asynccontextmanager
async def serving(script: Script, **pool_options: Any) -> AsyncIterator[tuple[Upstream, UpstreamPool]]:
    async with Upstream(script) as server:
        pool = UpstreamPool(server.url(), **pool_options)
        try:
            yield server, pool
        finally:
            await pool.aclose()


async def post(pool: UpstreamPool, body: bytes = b'{"jsonrpc":"2.0","id":1,"method":"ping"}', **kw: Any) -> bytes:
    async with await pool.request("POST", pool.path, JSON, body, **kw) as resp:
        return await resp.read()


# -- keep-alive -----------------------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_keep_alive_connection() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK)) as (server, pool):
            assert await post(pool) == b"{}"
            assert pool.stats() == {"idle": 1, "in_use": 0, "opened": 1, "waiting": 0}
            assert await post(pool) == b"{}"
            assert server.accepted == 1
            assert len(server.requests) == 2
            assert pool.stats()["opened"] == 1


async def test_request_is_one_message_with_host_headers_and_content_length() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK)) as (server, pool):
            async with await pool.request("POST", "/mcp?x=1", [(b"X-Trace", b"a\tb")], b"hello") as resp:
                assert resp.status == 200
                assert resp.header(b"content-type") == b"application/json"
                assert resp.header(b"x-missing") is None
                assert await resp.read() == b"{}"
            assert server.requests == [
                f"POST /mcp?x=1 HTTP/1.1\r\nhost: 127.0.0.1:{server.port}\r\nX-Trace: a\tb\r\n"
                "content-length: 5\r\n\r\nhello".encode()
            ]


async def test_connection_close_response_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
    with anyio.fail_after(5):
        async with serving(replay(closing, then_close=True)) as (server, pool):
            assert await post(pool) == b"{}"
            assert pool.stats()["idle"] == 0
            assert await post(pool) == b"{}"
            assert server.accepted == 2


async def test_idle_connection_closed_by_server_is_dropped_and_replaced() -> None:
    with anyio.fail_after(5):
        async with serving(replay(OK, then_close=True)) as (server, pool):
            assert await post(pool) == b"{}"
            await server.until(lambda: server.finished == 1)
            # The pool notices the FIN while the connection is parked, not when it is next used.
            while pool.stats()["idle"]:
                await anyio.sleep(0)
            assert pool.stats()["in_use"] == 0
            assert await post(pool) == b"{}"
            assert server.accepted == 2


async def test_bytes_sent_to_an_idle_connection_drop_it() -> None:
    first_done = asyncio.Event()

    async def chatty(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(OK)
        if peer.server.accepted == 1:
            await first_done.wait()
            await peer.send(b"HTTP/1.1 200 OK\r\n")  # unsolicited: the start of a spliced response
        await keep_answering(OK)(peer)

    with anyio.fail_after(5):
        async with serving(chatty) as (server, pool):
            assert await post(pool) == b"{}"
            first_done.set()
            while pool.stats()["idle"]:
                await anyio.sleep(0)
            assert await post(pool) == b"{}"
            assert server.accepted == 2


async def test_bytes_after_a_complete_response_are_refused() -> None:
    with anyio.fail_after(5):
        async with serving(replay(OK + b"HTTP/1.1 200 OK\r\n\r\n")) as (server, pool):
            with pytest.raises(UpstreamProtocolError, match="after the end"):
                await post(pool)
            assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 1, "waiting": 0}
            await server.until(lambda: server.finished == 1)


# -- bodies ---------------------------------------------------------------------------------------------------


async def test_chunked_body_split_across_tcp_writes_is_dechunked() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunk(b"hello ")
        + b"b;ext=1\r\nchunked wor\r\n"
        + chunk(b"ld")
        + b"0\r\nx-trailer: 1\r\n\r\n"
    )

    async def dribble(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(*(response[i : i + 3] for i in range(0, len(response), 3)))

    with anyio.fail_after(5):
        async with serving(dribble) as (server, pool):
            assert await post(pool) == b"hello chunked world"
            assert await post(pool) == b"hello chunked world"
            assert server.accepted == 1


async def test_sse_chunks_are_yielded_as_they_arrive() -> None:
    first_seen = asyncio.Event()
    second_sent = False

    async def stream(peer: Peer) -> None:
        nonlocal second_sent
        await peer.read_request()
        await peer.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            chunk(b"data: 1\n\n"),
        )
        await first_seen.wait()
        second_sent = True
        await peer.send(chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with serving(stream) as (_, pool):
            received = []
            async with await pool.request("POST", "/mcp", JSON, b"{}") as resp:
                assert resp.header(b"content-type") == b"text/event-stream"
                async for piece in resp.aiter_body():
                    received.append(piece)
                    if len(received) == 1:
                        assert not second_sent
                        first_seen.set()
            assert received == [b"data: 1\n\n", b"data: 2\n\n"]
            assert pool.stats()["idle"] == 1


async def test_interim_1xx_responses_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    with anyio.fail_after(5):
        async with serving(keep_answering(interim + OK)) as (_, pool):
            async with await pool.request("POST", "/mcp", JSON, b"{}") as resp:
                assert resp.status == 200
                assert resp.header(b"link") is None
                assert await resp.read() == b"{}"
            assert pool.stats()["idle"] == 1


async def test_bodiless_responses_keep_the_connection() -> None:
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    accepted = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
    with anyio.fail_after(5):
        async with serving(replay(no_content, accepted, OK)) as (server, pool):
            assert await post(pool) == b""
            async with await pool.request("POST", "/mcp", JSON, b"{}") as resp:
                assert resp.status == 202  # closed without reading: the body is complete anyway
            assert await post(pool) == b"{}"
            assert server.accepted == 1


async def test_head_response_has_no_body_and_its_connection_is_not_reused() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"
    with anyio.fail_after(5):
        async with serving(replay(head)) as (_, pool):
            async with await pool.request("HEAD", "/mcp", []) as resp:
                assert resp.header(b"content-length") == b"1234"
                assert await resp.read() == b""
            assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 1, "waiting": 0}


async def test_body_over_cap_is_refused() -> None:
    big_declared = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 100
    big_chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"x" * 60) + chunk(b"y" * 60)
    with anyio.fail_after(5):
        async with serving(replay(big_declared), max_body_bytes=64) as (_, pool):
            with pytest.raises(UpstreamProtocolError, match="size limit"):
                await post(pool)  # refused on the declared length
        async with serving(replay(big_chunked), max_body_bytes=64) as (_, pool):
            with pytest.raises(UpstreamProtocolError, match="size limit"):
                await post(pool)  # refused once the received bytes pass the cap
            assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 1, "waiting": 0}
        async with serving(replay(OK)) as (_, pool), await pool.request("POST", "/mcp", JSON, b"{}") as resp:
            with pytest.raises(UpstreamProtocolError, match="size limit"):
                await resp.read(limit=1)


async def test_streamed_body_is_not_capped_and_applies_back_pressure() -> None:
    size = 4 * 1024 * 1024
    sent = asyncio.Event()

    async def large(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"z" * size)
        sent.set()
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with serving(large, max_body_bytes=1024) as (_, pool), await pool.request("GET", "/mcp", []) as resp:
            conn = resp._conn
            assert conn is not None
            while not conn._paused:  # the consumer is idle, so reading stops at the high-water mark
                await anyio.sleep(0)
            assert conn.buffered < size
            total = 0
            async for piece in resp.aiter_body():
                total += len(piece)
            assert total == size
            assert sent.is_set()


async def test_connection_paused_by_an_unread_complete_body_is_resumed_on_reuse() -> None:
    # One byte past the high-water mark: the last read both completes the body and pauses reading.
    size = 256 * 1024 + 1
    large = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"z" * size
    with anyio.fail_after(5):
        async with serving(replay(large, OK)) as (server, pool):
            async with await pool.request("GET", "/mcp", []) as resp:
                conn = resp._conn
                assert conn is not None
                while not conn.complete:
                    await anyio.sleep(0)
                assert conn._paused
            assert await post(pool) == b"{}"
            assert server.accepted == 1


# -- refused framing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{}", "close-delimited"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "Content-Le",
        ),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "exactly chunked"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n{}", "exactly chunked"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", "repeats"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}", "Duplicate"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n{}", "Content-Length"),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}", "HTTP/1.1"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", "switched"),
        (b"HTTP/1.1 099 Weird\r\ncontent-length: 0\r\n\r\n", "out of range"),
        (b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\n{}", "malformed"),
        (b"HTTP/1.1 200 OK\ncontent-length: 2\n\n{}", "malformed"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1ffffffffffffffff\r\n{}\r\n", "overflow"),
    ],
)
async def test_smuggling_shaped_responses_are_refused(response: bytes, reason: str) -> None:
    with anyio.fail_after(5):
        async with serving(replay(response)) as (server, pool):
            with pytest.raises(UpstreamProtocolError, match=reason):
                await post(pool)
            assert pool.stats()["in_use"] == 0
            await server.until(lambda: server.finished == 1)  # the connection was closed, not parked


async def test_oversized_response_head_is_refused() -> None:
    # The first head ends but is too long (counted per field); the second never ends (counted as bytes fed).
    long_head = b"HTTP/1.1 200 OK\r\n" + b"x-pad: a\r\n" * 20 + b"content-length: 0\r\n\r\n"
    endless_field = b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 300_000
    with anyio.fail_after(5):
        async with serving(replay(long_head), max_header_bytes=64) as (_, pool):
            with pytest.raises(UpstreamProtocolError, match="max_header_bytes"):
                await post(pool)
        async with serving(replay(endless_field), max_header_bytes=1024) as (_, pool):
            with pytest.raises(UpstreamProtocolError, match="max_header_bytes"):
                await post(pool)


async def test_endless_chunk_framing_is_refused() -> None:
    endless_trailer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-t: " + b"a" * 300_000
    with anyio.fail_after(5):
        async with serving(replay(endless_trailer), max_header_bytes=1024) as (_, pool):
            with pytest.raises(UpstreamProtocolError, match="framing exceeds"):
                await post(pool)


async def hang_up(peer: Peer) -> None:
    await peer.read_request()


async def test_truncated_responses_are_errors() -> None:
    with anyio.fail_after(5):
        body_cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"
        async with serving(replay(body_cut, then_close=True)) as (_, pool):
            with pytest.raises(UpstreamProtocolError, match="mid-response"):
                await post(pool)
        async with serving(hang_up) as (_, pool):
            with pytest.raises(UpstreamConnectError, match="before responding"):
                await post(pool)


# -- timeouts, cancellation, connect failures -----------------------------------------------------------------


async def silent(peer: Peer) -> None:
    await peer.read_request()
    await peer.wait_eof()


async def test_server_that_never_answers_times_out_and_the_connection_is_dropped() -> None:
    with anyio.fail_after(5):
        async with serving(silent, read_timeout=0.2) as (server, pool):
            with pytest.raises(UpstreamTimeout):
                await post(pool)
            assert pool.stats()["in_use"] == 0
            await server.until(lambda: server.finished == 1)


async def test_body_read_gap_times_out() -> None:
    async def stall(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with serving(stall) as (server, pool):
            async with await pool.request("POST", "/mcp", JSON, b"{}", read_timeout=0.2) as resp:
                with pytest.raises(UpstreamTimeout):
                    await resp.read()
            await server.until(lambda: server.finished == 1)


@pytest.mark.parametrize("reader", ["aiter_body", "read"])
async def test_cancellation_mid_body_discards_the_connection(reader: str) -> None:
    async def partial(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with serving(partial) as (server, pool):
            resp = await pool.request("POST", "/mcp", JSON, b"{}")
            with anyio.CancelScope() as scope:
                if reader == "aiter_body":
                    async for piece in resp.aiter_body():
                        assert piece == b"0123456789"
                        scope.cancel()
                else:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(resp.read)
                        await anyio.wait_all_tasks_blocked()
                        scope.cancel()
            assert scope.cancelled_caught
            await server.until(lambda: server.finished == 1)
            assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 1, "waiting": 0}
            await resp.aclose()
            with pytest.raises(RuntimeError):
                await resp.read()


async def test_cancellation_while_waiting_for_the_head_discards_the_connection() -> None:
    with anyio.fail_after(5):
        async with serving(silent) as (server, pool):
            async with anyio.create_task_group() as tg:
                tg.start_soon(post, pool)
                await server.until(lambda: len(server.requests) == 1)
                tg.cancel_scope.cancel()
            await server.until(lambda: server.finished == 1)
            assert pool.stats()["in_use"] == 0


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}/mcp")
    with anyio.fail_after(5), pytest.raises(UpstreamConnectError, match="ConnectionRefusedError"):
        await post(pool)
    assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 0, "waiting": 0}


async def test_unanswered_tls_handshake_is_a_connect_timeout() -> None:
    async def mute(peer: Peer) -> None:
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with Upstream(mute) as server:
            pool = UpstreamPool(f"https://127.0.0.1:{server.port}/", connect_timeout=0.2)
            with pytest.raises(UpstreamTimeout, match="timed out"):
                await post(pool)
            assert pool.stats()["in_use"] == 0


async def test_dropped_response_gives_its_connection_back() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1) as (_, pool):
            resp: UpstreamResponse | None = await pool.request("POST", "/mcp", JSON, b"{}")
            assert pool.stats()["in_use"] == 1
            del resp
            gc.collect()
            assert pool.stats()["in_use"] == 0


# -- the pool's limits --------------------------------------------------------------------------------------


async def test_waiting_request_gets_the_released_connection() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1) as (server, pool):
            first = await pool.request("POST", "/mcp", JSON, b"{}")
            results: list[bytes] = []

            async def second() -> None:
                results.append(await post(pool))

            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                await anyio.wait_all_tasks_blocked()
                assert pool.stats()["waiting"] == 1
                assert await first.read() == b"{}"
            assert results == [b"{}"]
            assert server.accepted == 1


async def test_waiting_request_opens_a_connection_when_one_is_discarded() -> None:
    async def first_one_stalls(peer: Peer) -> None:
        if peer.server.accepted == 1:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
        await keep_answering(OK)(peer)

    with anyio.fail_after(5):
        async with serving(first_one_stalls, max_connections=1) as (server, pool):
            first = await pool.request("POST", "/mcp", JSON, b"{}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(post, pool)
                await anyio.wait_all_tasks_blocked()
                await first.aclose()  # mid-body: the connection is closed and its slot freed
            assert server.accepted == 2
            assert pool.stats() == {"idle": 1, "in_use": 0, "opened": 2, "waiting": 0}


async def test_concurrent_requests_share_at_most_max_connections() -> None:
    results: list[bytes] = []

    async def one() -> None:
        results.append(await post(pool))

    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=4) as (server, pool):
            async with anyio.create_task_group() as tg:
                for _ in range(40):
                    tg.start_soon(one)
            assert results == [b"{}"] * 40
            assert server.accepted <= 4
            assert pool.stats() == {"idle": server.accepted, "in_use": 0, "opened": server.accepted, "waiting": 0}


async def test_pool_exhausted_times_out_after_connect_timeout() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1, connect_timeout=0.2) as (_, pool):
            async with await pool.request("POST", "/mcp", JSON, b"{}"):
                with pytest.raises(UpstreamTimeout, match="became free"):
                    await post(pool)
                assert pool.stats()["waiting"] == 0
            assert pool.stats()["idle"] == 1


async def test_cancelled_waiter_leaves_the_queue() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1) as (_, pool):
            first = await pool.request("POST", "/mcp", JSON, b"{}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(post, pool)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
            assert pool.stats()["waiting"] == 0
            assert await first.read() == b"{}"
            assert pool.stats() == {"idle": 1, "in_use": 0, "opened": 1, "waiting": 0}


async def test_connection_closed_during_hand_over_is_replaced_before_anything_is_sent() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1) as (server, pool):
            first = await pool.request("POST", "/mcp", JSON, b"{}")
            conn = first._conn
            assert conn is not None
            results: list[bytes] = []

            async def second() -> None:
                results.append(await post(pool))

            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                await anyio.wait_all_tasks_blocked()
                assert await first.read() == b"{}"  # handed to the waiter, which has not run yet
                conn.abort()  # ...and the upstream's close lands in between
            assert results == [b"{}"]
            assert server.accepted == 2
            assert len(server.requests) == 2


async def test_waiter_cancelled_after_being_handed_a_connection_passes_it_on() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1) as (server, pool):
            first = await pool.request("POST", "/mcp", JSON, b"{}")
            # A plain asyncio task: anyio defers cancelling a task whose future is already done, asyncio does not.
            waiting = asyncio.create_task(post(pool))
            await anyio.wait_all_tasks_blocked()
            assert await first.read() == b"{}"  # handed to the waiter, which has not run yet
            waiting.cancel()  # ...and is cancelled before it does
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert pool.stats() == {"idle": 1, "in_use": 0, "opened": 1, "waiting": 0}
            assert await post(pool) == b"{}"
            assert server.accepted == 1


async def test_idle_connection_found_closing_on_reuse_is_skipped() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK)) as (server, pool):
            assert await post(pool) == b"{}"
            pool._idle[-1].abort()  # closing, but connection_lost has not run yet
            assert await post(pool) == b"{}"
            assert server.accepted == 2
            assert pool.stats() == {"idle": 1, "in_use": 0, "opened": 2, "waiting": 0}


async def test_encoded_request_lines_are_cached_within_a_bound() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK)) as (server, pool):
            for n in range(70):
                async with await pool.request("GET", f"/mcp?page={n}", []) as resp:
                    assert await resp.read() == b"{}"
            assert len(pool._request_lines) <= 64
            assert server.requests[-1].startswith(b"GET /mcp?page=69 HTTP/1.1\r\n")


async def test_closed_pool_refuses_requests_and_wakes_waiters() -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK), max_connections=1) as (_, pool):
            first = await pool.request("POST", "/mcp", JSON, b"{}")
            errors: list[BaseException] = []

            async def second() -> None:
                try:
                    await post(pool)
                except UpstreamError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                await anyio.wait_all_tasks_blocked()
                await pool.aclose()
            assert [type(e) for e in errors] == [UpstreamConnectError]
            assert await first.read() == b"{}"
            assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 1, "waiting": 0}
            with pytest.raises(UpstreamConnectError, match="closed"):
                await post(pool)


# -- what the caller may send ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-a", b"ok\r\nx-injected: 1")],
        [(b"x-a", b"ok\nx-injected: 1")],
        [(b"x-a", b"ok\rx")],
        [(b"x-a", b"nul\x00")],
        [(b"x-a", b"del\x7f")],
        [(b"x a", b"v")],
        [(b"x-a:", b"v")],
        [(b"", b"v")],
        [(b"Host", b"evil.example")],
        [(b"Content-Length", b"0")],
        [(b"transfer-encoding", b"chunked")],
        [(b"Connection", b"close")],
    ],
)
async def test_unsafe_header_raises_value_error_and_sends_nothing(headers: list[tuple[bytes, bytes]]) -> None:
    with anyio.fail_after(5):
        async with serving(keep_answering(OK)) as (server, pool):
            with pytest.raises(ValueError):
                await pool.request("POST", "/mcp", [(b"x-fine", b"1"), *headers], b"{}")
            assert server.accepted == 0
            assert pool.stats()["opened"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST /x HTTP/1.1\r\n", "/mcp"), ("", "/mcp"), ("CONNECT", "/mcp"), ("GET", "/a b"), ("GET", "mcp"),
     ("GET", "/\r\nx: y"), ("GET", "/é")],
)  # fmt: skip
async def test_unsafe_request_line_raises_value_error(method: str, path: str) -> None:
    pool = UpstreamPool("http://127.0.0.1:1/mcp")
    with pytest.raises(ValueError):
        await pool.request(method, path, [])
    assert pool.stats()["opened"] == 0


def test_url_is_parsed_once_into_origin_path_and_host() -> None:
    assert UpstreamPool("http://example.com").path == "/"
    assert UpstreamPool("https://example.com/mcp/v1?tenant=a").path == "/mcp/v1?tenant=a"
    assert UpstreamPool("https://example.com:443/")._host_field == b"host: example.com\r\n"
    assert UpstreamPool("http://[::1]:8080/")._host_field == b"host: [::1]:8080\r\n"
    assert UpstreamPool("http://bücher.example/")._host_field == b"host: xn--bcher-kva.example\r\n"
    for bad in ["ftp://example.com/", "http:///nohost", "http://user:pw@example.com/", "http://example.com/a b"]:
        with pytest.raises(ValueError):
            UpstreamPool(bad)
    with pytest.raises(ValueError):
        UpstreamPool("http://example.com/", max_connections=0)


# -- TLS and the pinned identity ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> tuple[ssl.SSLContext, bytes]:
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context, ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_verify_peer_sees_the_certificate_before_any_request_byte(
    ca: trustme.CA, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    server_context, der = server_tls
    seen: list[tuple[bytes, int]] = []
    with anyio.fail_after(5):
        async with Upstream(keep_answering(OK), ssl_context=server_context) as server:

            def verify_peer(peer_der: bytes) -> None:
                seen.append((peer_der, len(server.received)))

            pool = UpstreamPool(server.url(), ssl_context=client_tls(ca), verify_peer=verify_peer)
            assert await post(pool) == b"{}"
            assert await post(pool) == b"{}"
            await pool.aclose()
    assert seen == [(der, 0)]  # once per connection, before the server had read a byte
    assert len(server.requests) == 2


@pytest.mark.parametrize("failure", [UpstreamIdentityError("pin mismatch"), ValueError("not the pinned key")])
async def test_failing_verify_peer_sends_nothing(
    ca: trustme.CA, server_tls: tuple[ssl.SSLContext, bytes], failure: Exception
) -> None:
    def verify_peer(peer_der: bytes) -> None:
        raise failure

    with anyio.fail_after(5):
        async with Upstream(keep_answering(OK), ssl_context=server_tls[0]) as server:
            pool = UpstreamPool(server.url(), ssl_context=client_tls(ca), verify_peer=verify_peer)
            with pytest.raises(UpstreamIdentityError) as caught:
                await post(pool)
            await server.until(lambda: server.finished == 1)
            assert server.received == b""
            assert pool.stats() == {"idle": 0, "in_use": 0, "opened": 0, "waiting": 0}
    assert caught.value is failure or caught.value.__cause__ is failure


async def test_untrusted_certificate_is_a_connect_error(server_tls: tuple[ssl.SSLContext, bytes]) -> None:
    called = False

    def verify_peer(peer_der: bytes) -> None:
        nonlocal called
        called = True

    with anyio.fail_after(5):
        async with Upstream(keep_answering(OK), ssl_context=server_tls[0]) as server:
            pool = UpstreamPool(server.url(), verify_peer=verify_peer)  # default context: the CA is unknown
            with pytest.raises(UpstreamConnectError, match="SSLCertVerificationError"):
                await post(pool)
            assert not called


async def test_verify_peer_is_not_called_for_http() -> None:
    def verify_peer(peer_der: bytes) -> None:
        raise AssertionError("called for a plain-http upstream")

    with anyio.fail_after(5):
        async with Upstream(keep_answering(OK)) as server:
            pool = UpstreamPool(server.url(), verify_peer=verify_peer)
            assert await post(pool) == b"{}"
            await pool.aclose()


async def test_each_wait_times_out_after_its_own_read_timeout_whatever_an_earlier_wait_armed() -> None:
    # One timer serves many waits on a connection: a wait that needs it sooner re-arms it, and a wait that
    # started later than the one that armed it is not cut short.
    async def slow_then_silent(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(4):
            await asyncio.sleep(0.2)  # each gap is within read_timeout, all of them together are not
            await peer.send(chunk(b"x"))
        await peer.send(b"0\r\n\r\n")
        await peer.read_request()
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with serving(slow_then_silent) as (server, pool):
            async with await pool.request("POST", "/mcp", JSON, b"{}", read_timeout=0.5) as resp:
                assert [piece async for piece in resp.aiter_body()] == [b"x"] * 4
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(UpstreamTimeout):
                await pool.request("POST", "/mcp", JSON, b"{}", read_timeout=0.1)
            assert loop.time() - started < 0.4  # not when the timer armed for the 0.5 s waits was due
            assert server.accepted == 1


async def test_a_bad_header_is_named_in_the_order_the_headers_come() -> None:
    pool = UpstreamPool("http://127.0.0.1:1/mcp")
    with pytest.raises(ValueError, match="control character"):
        await pool.request("POST", "/mcp", [(b"x-a", b"ok\r\nx: 1"), (b"host", b"evil")], b"{}")
    with pytest.raises(ValueError, match="set by the upstream pool"):
        await pool.request("POST", "/mcp", [(b"host", b"evil"), (b"x-a", b"ok\r\nx: 1")], b"{}")
    assert pool.stats()["opened"] == 0


async def test_body_complete_says_when_the_batch_just_read_was_the_last() -> None:
    async def sse(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"a"))
        await asyncio.sleep(0.1)
        await peer.send(chunk(b"b") + b"0\r\n\r\n")
        await peer.wait_eof()

    with anyio.fail_after(5):
        async with serving(sse) as (_, pool):
            async with await pool.request("POST", "/mcp", JSON, b"{}") as resp:
                seen = [(batch, resp.body_complete) async for batch in resp.aiter_batches()]
            assert b"".join(b"".join(batch) for batch, _ in seen) == b"ab"
            assert [complete for _, complete in seen][-1] is True
            assert not any(complete for _, complete in seen[:-1])
            assert pool.stats() == {"idle": 1, "in_use": 0, "opened": 1, "waiting": 0}
