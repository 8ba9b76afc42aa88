"""Properties of upstream response parsing: split points do not matter, and hostile bytes only ever fail cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mcp_gateway.errors import UpstreamError
from mcp_gateway.upstream import UpstreamPool
from mcp_gateway.upstream._connection import Connection

pytestmark = pytest.mark.anyio


# -- split points ---------------------------------------------------------------------------------------------


class SocketStub(asyncio.Transport):
    """Stands in for the socket so the bytes can be delivered at exactly the chosen split points."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_field_names = st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True).map(str.encode)
# llhttp trims optional whitespace around a value, so generated values start and end with a visible character.
_field_values = st.from_regex(r"[!-~]([ !-~\t]{0,30}[!-~])?", fullmatch=True).map(str.encode)


@st.composite
def valid_responses(draw: st.DrawFn) -> tuple[bytes, int, list[tuple[bytes, bytes]], bytes]:
    """A well-formed HTTP/1.1 response: (wire bytes, status, lowercased headers, body)."""
    status = draw(st.sampled_from([200, 201, 202, 204, 304, 400, 401, 404, 500, 503]))
    headers = [(name, value) for name, value in draw(st.lists(st.tuples(_field_names, _field_values), max_size=6))]
    body = b"" if status in (204, 304) else draw(st.binary(max_size=400))
    if status in (204, 304):
        framing = b""
    elif draw(st.booleans()):
        headers.append((b"transfer-encoding", b"chunked"))
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(body))), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
        framing = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        headers.append((b"content-length", b"%d" % len(body)))
        framing = body
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else b""
    head = b"HTTP/1.1 %d Reason\r\n" % status + b"".join(b"%s: %s\r\n" % field for field in headers) + b"\r\n"
    return interim + head + framing, status, [(n.lower(), v) for n, v in headers], body


def parse(pieces: list[bytes]) -> tuple[Connection, bytes]:
    conn = Connection(asyncio.get_running_loop(), 64 * 1024)
    conn.connection_made(SocketStub())
    assert conn.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    for piece in pieces:
        conn.data_received(piece)
    return conn, b"".join(conn.take_chunks())


@st.composite
def split_responses(draw: st.DrawFn) -> tuple[tuple[bytes, int, list[tuple[bytes, bytes]], bytes], list[bytes]]:
    # Split points are drawn here, not with st.data() in the test: an overrun inside an anyio-run test body
    # surfaces as an error instead of a discarded example.
    response = draw(valid_responses())
    raw = response[0]
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    return response, [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True) if b > a]


@settings(max_examples=100, deadline=None)
@given(split=split_responses())
async def test_any_split_of_a_valid_response_parses_the_same(
    split: tuple[tuple[bytes, int, list[tuple[bytes, bytes]], bytes], list[bytes]],
) -> None:
    (raw, status, headers, body), pieces = split

    conn, received = parse(pieces)
    assert conn.error is None
    assert (conn.status, conn.headers, received) == (status, headers, body)
    assert conn.reusable

    whole, whole_body = parse([raw])
    assert (whole.status, whole.headers, whole_body, whole.reusable) == (conn.status, conn.headers, received, True)


@settings(max_examples=50, deadline=None)
@given(first=valid_responses(), second=valid_responses(), cut=st.integers(0, 10_000))
async def test_consecutive_responses_on_one_connection_parse_independently(
    first: tuple[bytes, int, list[tuple[bytes, bytes]], bytes],
    second: tuple[bytes, int, list[tuple[bytes, bytes]], bytes],
    cut: int,
) -> None:
    conn, received = parse([first[0]])
    assert (conn.status, received, conn.reusable) == (first[1], first[3], True)
    raw = second[0]
    assert conn.send(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
    conn.data_received(raw[: cut % (len(raw) + 1)])
    if raw[cut % (len(raw) + 1) :]:
        conn.data_received(raw[cut % (len(raw) + 1) :])
    assert conn.error is None
    assert (conn.status, conn.headers, b"".join(conn.take_chunks())) == second[1:]
    assert conn.reusable


# -- hostile bytes --------------------------------------------------------------------------------------------

_status_lines = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 100 Continue",
     b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
     b"HTTP/2 200", b"HTTP/1.1 999 X", b"HTTP/1.1 20 X", b"http/1.1 200 ok", b"HTTP/1.1 200", b"HTTP/1.1  200 OK",
     b"", b"\x00", b"HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK"]
)  # fmt: skip
_field_lines = st.sampled_from(
    [b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: 1, 2", b"Content-Length: 5, 5",
     b"Content-Length: 5\r\nContent-Length: 5", b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: -1",
     b"Content-Length: 99999999999999999999999", b"Content-Length : 5", b" Content-Length: 5", b"Content-Length: 0x5",
     b"Content-Length: +5", b"Content-Length: 5 ", b"Content-Length:\t5",
     b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked, identity",
     b"Transfer-Encoding: identity, chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: xchunked",
     b"Transfer-Encoding : chunked", b"Transfer-Encoding:\tchunked", b"Transfer-encoding: CHUNKED",
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: chunked\r\n\tidentity",
     b"Connection: close", b"Connection: keep-alive", b"Connection: upgrade\r\nUpgrade: h2c",
     b"X-Folded: a\r\n b", b"X-Bare-LF: a\nb", b"X-Bare-CR: a\rb", b"X-Nul: a\x00b", b"X-Ctl: \x01", b"X-Obs: \xff",
     b"Content-Type: text/event-stream", b"X-Empty:", b": no-name", b"No-Colon", b"X\x00Y: 1"]
)  # fmt: skip
_chunk_lines = st.sampled_from(
    [b"5\r\nhello\r\n", b"0\r\n\r\n", b"0\r\n\r\n", b"-1\r\n", b"fffffffffffffffffff\r\n", b"5;ext=1\r\nhello\r\n",
     b"5 \r\nhello\r\n", b" 5\r\nhello\r\n", b"0x5\r\nhello\r\n", b"+5\r\nhello\r\n", b"5\r\nhelloXX", b"5\nhello\n",
     b"0\r\nX-Trailer: 1\r\n\r\n", b"0\r\nContent-Length: 5\r\n\r\n", b"\r\n", b"zz\r\n", b"2\r\nhello\r\n"]
)  # fmt: skip
_line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"])


@st.composite
def hostile_responses(draw: st.DrawFn) -> bytes:
    # Mostly well-formed lines, so that the framing checks behind the tokenizer get exercised, not only llhttp's.
    sloppy = draw(st.integers(0, 3)) == 0

    def eol() -> bytes:
        return draw(_line_ends) if sloppy else b"\r\n"

    head = draw(_status_lines) + eol() + b"".join(line + eol() for line in draw(st.lists(_field_lines, max_size=4)))
    body = draw(st.one_of(st.binary(max_size=40), st.lists(_chunk_lines, max_size=5).map(b"".join)))
    raw = head + eol() + body
    if draw(st.integers(0, 3)) == 0:  # then corrupt it somewhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at + draw(st.integers(0, 4)) :]
    return raw


async def _replay_and_close(payload: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(payload)
        await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@settings(max_examples=150, deadline=None)
@given(payload=st.one_of(hostile_responses(), hostile_responses(), st.binary(max_size=200)), streaming=st.booleans())
async def test_hostile_responses_only_raise_upstream_errors_and_never_hang(payload: bytes, streaming: bool) -> None:
    handlers: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        await _replay_and_close(payload, reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(f"http://127.0.0.1:{port}/mcp", read_timeout=30, max_header_bytes=4096)
    try:
        with anyio.fail_after(5):  # read_timeout is far longer: only a hang would get here
            try:
                async with await pool.request("POST", "/mcp", [(b"accept", b"*/*")], b"{}") as resp:
                    if streaming:
                        async for _ in resp.aiter_body():
                            pass
                    else:
                        await resp.read()
                event("accepted")
            except UpstreamError as exc:
                event(f"{type(exc).__name__}: {exc}"[:80])
        assert pool.stats()["in_use"] == 0
    finally:
        await pool.aclose()
        server.close()
        await asyncio.gather(*handlers)
        await server.wait_closed()
