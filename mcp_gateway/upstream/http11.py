"""The upstream leg: a keep-alive HTTP/1.1 connection pool over asyncio, parsing with llhttp (httptools).

Retries: MCP requests are POSTs and not idempotent, so a request that may have reached the upstream is never
sent again. Instead, a parked connection that the upstream closes is noticed while it is parked (the connection
parses whatever arrives, so an EOF, a reset or a stray byte closes it and frees its slot at once), and a connection
found closing at the moment of writing, when not one byte has gone out, is swapped for another once. What is left
is the race where the upstream's FIN is still on the wire while we write: that request fails with
`UpstreamConnectError`, and only the caller knows whether repeating it is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal
from urllib.parse import urlsplit

from mcp_gateway.errors import UpstreamConnectError, UpstreamIdentityError, UpstreamTimeout
from mcp_gateway.upstream._connection import Connection
from mcp_gateway.upstream._request import check_path, encode_request, encode_request_line
from mcp_gateway.upstream._response import UpstreamResponse, wait_limit

__all__ = ["UpstreamPool", "UpstreamResponse"]

# Bounds the cache of encoded request lines; a gateway proxies one or two routes, so this is never reached.
_REQUEST_LINE_CACHE_SIZE = 64


def _expire_waiter(waiter: asyncio.Future[Connection | bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class UpstreamPool:
    """Keep-alive connections to one upstream origin: at most `max_connections`, idle ones reused LIFO."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_call_seconds: float | None = None,
        max_header_bytes: int = 64 * 1024,
        max_body_bytes: int = 16 * 1024 * 1024,
        verify_peer: Callable[[bytes], None] | None = None,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"upstream URL must be http or https: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("upstream URL must not carry userinfo (RFC 9110 §4.2.4)")
        host = parts.hostname
        if not host:
            raise ValueError(f"upstream URL has no host: {url!r}")
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        check_path(path)
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")

        authority = host.encode("idna").decode("ascii")
        if ":" in authority:
            authority = f"[{authority}]"  # RFC 3986 §3.2.2: an IPv6 literal is bracketed
        if port != default_port:
            authority = f"{authority}:{port}"
        self._host = host
        self._port = port
        self._path = path
        self._origin = f"{scheme}://{authority}"
        self._host_field = f"host: {authority}\r\n".encode("ascii")
        if scheme == "https":
            self._ssl: ssl.SSLContext | None = ssl_context or ssl.create_default_context()
            self._verify_peer = verify_peer
        else:
            self._ssl = None
            self._verify_peer = None
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_call_seconds = max_call_seconds
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._request_lines: dict[tuple[str, str], bytes] = {}
        self._idle: list[Connection] = []
        self._waiters: deque[asyncio.Future[Connection | bool]] = deque()
        self._open = 0  # connections open or being opened, idle or not
        self._opened = 0
        self._closed = False

    @property
    def path(self) -> str:
        """The path and query of the upstream URL, e.g. "/mcp"."""
        return self._path

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request and return once the response head has been parsed."""
        request_line = self._request_lines.get((method, path))
        if request_line is None:
            request_line = encode_request_line(method, path, self._host_field)
            if len(self._request_lines) >= _REQUEST_LINE_CACHE_SIZE:
                self._request_lines.clear()
            self._request_lines[method, path] = request_line
        # Encoded (and so validated) before a connection is taken: a refused header sends nothing.
        data = encode_request(request_line, headers, body)
        timeout = self._read_timeout if read_timeout is None else read_timeout
        # max_call_seconds bounds the whole exchange, from here to the body's last byte, however chatty it is.
        cap = self._max_call_seconds
        deadline = None if cap is None else asyncio.get_running_loop().time() + cap
        conn = await self._acquire()
        if not conn.send(data, head_only=method == "HEAD"):
            # The upstream closed it while it was being handed to us and nothing was written, so one try on
            # another connection cannot make a non-idempotent request happen twice. A second failure is raised.
            self._release(conn, reuse=False)
            conn = await self._acquire()
            conn.send(data, head_only=method == "HEAD")
        try:
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                if not await conn.wait(wait_limit(timeout, deadline)):
                    raise UpstreamTimeout("upstream sent no response head within read_timeout or max_call_seconds")
        except BaseException:
            self._release(conn, reuse=False)
            raise
        return UpstreamResponse(
            conn, read_timeout=timeout, max_body_bytes=self._max_body_bytes, give_back=self._release, deadline=deadline
        )

    async def aclose(self) -> None:
        """Close the idle connections; those in use are closed when their response is released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.on_idle_lost = None
            conn.abort()
            self._open -= 1
        self._wake_waiters()
        for conn in idle:
            await conn.wait_closed()

    def stats(self) -> dict[str, int]:
        """Connection counts for tests and readiness probes."""
        idle = len(self._idle)
        return {"idle": idle, "in_use": self._open - idle, "opened": self._opened, "waiting": len(self._waiters)}

    # -- connection life cycle --------------------------------------------------------------------------------

    async def _acquire(self) -> Connection:
        deadline: float | None = None
        while True:
            if self._closed:
                raise UpstreamConnectError("the upstream pool is closed")
            idle = self._idle
            while idle:  # LIFO: the most recently used connection is the least likely to have been timed out
                conn = idle.pop()
                conn.on_idle_lost = None
                if conn.reusable:
                    return conn
                conn.abort()
                self._open -= 1
            if self._open < self._max_connections:
                return await self._new_connection()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._connect_timeout if deadline is None else deadline
            got = await self._queue(loop, deadline)
            if isinstance(got, Connection):
                return got  # it was reusable when handed over; send() notices if it closed since

    async def _queue(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Connection | bool:
        """Wait for a released connection (returned) or a freed slot (True); UpstreamTimeout at the deadline."""
        waiter: asyncio.Future[Connection | bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(max(0.0, deadline - loop.time()), _expire_waiter, waiter)
        try:
            got = await waiter
        except BaseException:
            # Cancelled in the queue: whatever was handed over in the meantime goes to the next in line.
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else False
            if handed is False:
                with contextlib.suppress(ValueError):  # unless a release already skipped past it
                    self._waiters.remove(waiter)
            else:
                self._pass_on(handed)
            raise
        finally:
            timer.cancel()
        if got is False:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise UpstreamTimeout("no upstream connection became free within connect_timeout")
        return got

    async def _new_connection(self) -> Connection:
        self._open += 1
        try:
            conn = await self._connect()
        except BaseException:
            self._open -= 1
            self._pass_on(True)
            raise
        self._opened += 1
        return conn

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        max_header_bytes = self._max_header_bytes
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(loop, max_header_bytes),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                ),
                self._connect_timeout,
            )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise UpstreamTimeout(f"connecting to {self._origin} timed out") from exc
        except OSError as exc:  # refused, reset, DNS, and ssl.SSLError (handshake, CA, hostname)
            raise UpstreamConnectError(f"cannot connect to {self._origin}: {type(exc).__name__}") from exc
        if self._verify_peer is not None:
            # After the handshake, before the first request byte: a mismatched peer learns nothing.
            try:
                der: bytes | None = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
                self._verify_peer(der or b"")  # an anonymous peer offers nothing, which matches no pin
            except BaseException as exc:
                conn.abort()
                if isinstance(exc, UpstreamIdentityError) or not isinstance(exc, Exception):
                    raise
                raise UpstreamIdentityError("the upstream certificate does not match the pinned identity") from exc
        return conn

    def _release(self, conn: Connection, reuse: bool) -> None:
        if reuse and not self._closed and conn.reusable:
            waiter = self._next_waiter()
            if waiter is not None:
                waiter.set_result(conn)
                return
            conn.on_idle_lost = self._forget_idle
            self._idle.append(conn)
            return
        conn.abort()
        self._open -= 1
        self._pass_on(True)

    def _forget_idle(self, conn: Connection) -> None:
        # The upstream closed (or misbehaved on) a parked connection: drop it and free its slot. Only parked
        # connections carry this callback; taking one out of `_idle` clears it.
        self._idle.remove(conn)
        self._open -= 1
        self._pass_on(True)

    def _pass_on(self, got: Connection | Literal[True]) -> None:
        """Hand a connection, or the news of a free slot, to the first live waiter."""
        if isinstance(got, Connection):
            self._release(got, reuse=True)
            return
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(True)

    def _next_waiter(self) -> asyncio.Future[Connection | bool] | None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # else it timed out or was cancelled and has not yet left the queue itself
                return waiter
        return None

    def _wake_waiters(self) -> None:
        while (waiter := self._next_waiter()) is not None:
            waiter.set_result(True)
