"""A response from the upstream pool: its head, and its body read whole or streamed from the connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import TracebackType

from mcp_gateway.errors import UpstreamProtocolError, UpstreamTimeout
from mcp_gateway.upstream._connection import Connection


class UpstreamResponse:
    """A response whose head has been read; the body is read (or streamed) from the connection on demand.

    Once the body has been read to its end the connection goes back to the pool straight away, so `aclose()`
    is then a no-op; it is still required, via `async with`, for every other path.
    """

    __slots__ = ("_conn", "_deadline", "_give_back", "_max_body_bytes", "_read_timeout", "headers", "status")

    def __init__(
        self,
        conn: Connection,
        *,
        read_timeout: float,
        max_body_bytes: int,
        give_back: Callable[[Connection, bool], None],
        deadline: float | None = None,
    ) -> None:
        self.status: int = conn.status
        self.headers: list[tuple[bytes, bytes]] = conn.headers
        self._conn: Connection | None = conn
        # The pool's release hook, called once with (connection, reusable); None once it has been.
        self._give_back: Callable[[Connection, bool], None] | None = give_back
        self._read_timeout = read_timeout
        self._max_body_bytes = max_body_bytes
        self._deadline = deadline  # the loop time by which the whole call must be over (max_call_seconds)

    def header(self, name: bytes) -> bytes | None:
        """The first value of the field `name` (lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def aiter_body(self) -> AsyncIterator[bytes]:
        """Yield body chunks (de-chunked) as they arrive; nothing is accumulated, so there is no size cap."""
        conn = self._live_connection()
        try:
            while (chunks := await self._next_chunks(conn)) is not None:
                for chunk in chunks:
                    yield chunk
        except BaseException:
            # Includes cancellation and GeneratorExit: the exchange is mid-body, so the connection is useless.
            self._release(reuse=False)
            raise
        self._release(reuse=True)

    async def aiter_batches(self) -> AsyncGenerator[list[bytes]]:
        """Like `aiter_body`, but yields every chunk that has arrived since the last yield as one list.

        A consumer that relays what it gets can then write once per batch; `body_complete` says whether the
        batch just yielded was the last.
        """
        conn = self._live_connection()
        try:
            while (chunks := await self._next_chunks(conn)) is not None:
                yield chunks
        except BaseException:
            # Includes cancellation and GeneratorExit: the exchange is mid-body, so the connection is useless.
            self._release(reuse=False)
            raise
        self._release(reuse=True)

    @property
    def body_complete(self) -> bool:
        """True when the whole body has arrived and been handed over: reading on would end without waiting."""
        conn = self._conn
        return conn is not None and conn.complete and not conn.chunks and conn.error is None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; UpstreamProtocolError if it is longer than `limit` or the pool's `max_body_bytes`."""
        conn = self._live_connection()
        cap = self._max_body_bytes if limit is None else min(limit, self._max_body_bytes)
        try:
            if conn.content_length is not None and conn.content_length > cap:
                raise UpstreamProtocolError("upstream response body exceeds the size limit")
            parts: list[bytes] = []
            size = 0
            while (chunks := await self._next_chunks(conn)) is not None:
                for chunk in chunks:
                    size += len(chunk)
                if size > cap:
                    raise UpstreamProtocolError("upstream response body exceeds the size limit")
                parts += chunks
        except BaseException:
            self._release(reuse=False)
            raise
        self._release(reuse=True)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        """Return the connection to the pool if the response arrived in full, else close it. Idempotent."""
        self._release(reuse=True)

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release(reuse=True)

    def __del__(self) -> None:
        # A response dropped without aclose() would hold its pool slot forever; give it back instead.
        if self._conn is not None:
            with contextlib.suppress(RuntimeError):  # the event loop is already closed
                self._release(reuse=False)

    def _live_connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the response body was already read or the response is closed")
        return self._conn

    async def _next_chunks(self, conn: Connection) -> list[bytes] | None:
        # The error check comes first: a response followed by garbage must not be delivered (RFC 9112 §11.2).
        while True:
            if conn.error is not None:
                raise conn.error
            if conn.chunks:
                return conn.take_chunks()
            if conn.complete:
                return None
            if not await conn.wait(wait_limit(self._read_timeout, self._deadline)):
                raise UpstreamTimeout("upstream sent nothing within read_timeout or max_call_seconds")

    def _release(self, *, reuse: bool) -> None:
        conn, give_back = self._conn, self._give_back
        if conn is None or give_back is None:
            return
        self._conn = self._give_back = None
        give_back(conn, reuse)


def wait_limit(read_timeout: float, deadline: float | None) -> float:
    """How long the next wait for bytes may last: the read timeout, or less if the call's deadline is nearer."""
    if deadline is None:
        return read_timeout
    return max(0.0, min(read_timeout, deadline - asyncio.get_running_loop().time()))
