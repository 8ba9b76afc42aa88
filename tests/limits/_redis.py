"""The real Redis the tests run against (127.0.0.1:6379), a key prefix per test, and stand-ins for an outage.

Under `CI=true` a Redis that cannot be reached fails the test; elsewhere the test skips, loudly.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import pytest
import redis.asyncio as aioredis
from anyio.abc import SocketStream

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def require_redis() -> None:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(16)
    except OSError as exc:
        answer = f"{type(exc).__name__}: {exc}".encode()
    if answer.startswith(b"+PONG"):
        return
    why = f"Redis at {REDIS_HOST}:{REDIS_PORT} did not answer PING ({answer!r})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; under CI=true the shared-limit tests must run")
    pytest.skip(f"REDIS UNREACHABLE — shared-limit tests NOT RUN: {why}")


@asynccontextmanager
async def key_prefix() -> AsyncIterator[str]:
    """A prefix no other test uses; every key under it is deleted afterwards."""
    require_redis()
    prefix = f"test-{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def keys_under(prefix: str) -> list[str]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return sorted([key async for key in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()


def closed_port() -> tuple[socket.socket, int]:
    """A port bound but not listening (connections are refused); keep the socket until done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


class RedisDoor:
    """A TCP front for Redis that either forwards to it or accepts connections and never answers.

    "blackhole" is the outage that hurts: a Redis (or a network path) that takes the connection and then
    says nothing. Switching to "forward" is Redis coming back.
    """

    def __init__(self) -> None:
        self.mode: Literal["forward", "blackhole"] = "forward"
        self.port = 0
        self._opened: list[SocketStream] = []

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if self.mode == "blackhole":
                self._opened.append(client)
                await anyio.sleep_forever()
            async with await anyio.connect_tcp(REDIS_HOST, REDIS_PORT) as upstream, anyio.create_task_group() as tg:

                async def pump(source: SocketStream, sink: SocketStream) -> None:
                    try:
                        async for chunk in source:
                            await sink.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[RedisDoor]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self.listen()
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def listen(self) -> None:
        """Accept connections (again, on the same port after `refuse`)."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._listening = anyio.CancelScope()

        async def serve() -> None:
            with self._listening:
                async with listener:
                    await listener.serve(self._handle)

        self._tg.start_soon(serve)

    def refuse(self) -> None:
        """Stop listening: new connections are refused, as with a Redis that is not running."""
        self._listening.cancel()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
