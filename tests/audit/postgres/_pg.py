"""Helpers for the PostgreSQL tests: plain SQL on a URL, a sink that is started and closed, a stalling proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from mcp_gateway.audit.postgres import PostgresAuditSink

SERVER_URL = os.environ.get("MCP_GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def schema_url(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"


async def execute(url: str, sql: str, *args: Any) -> str:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[PostgresAuditSink]:
    sink = PostgresAuditSink(url, **options)
    with anyio.fail_after(15):
        await sink.start()
    try:
        yield sink
    finally:
        with anyio.fail_after(15):
            await sink.aclose()


class StallingProxy:
    """A TCP forwarder to PostgreSQL that can stall: while `stalled`, it accepts connections and forwards
    nothing either way, like a database host that stopped answering without closing anything."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def stalled(self) -> bool:
        return not self._resumed.is_set()

    @stalled.setter
    def stalled(self, value: bool) -> None:
        # Connections accepted while stalled (the driver's own cancel requests among them) are closed when
        # the stall ends, so nothing the client opened is left waiting on them.
        if value:
            self._resumed.clear()
        else:
            self._resumed.set()

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.stalled = False
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            if self.stalled:
                await self._resumed.wait()  # hold the connection open, answer nothing
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.append(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(self, source: asyncio.StreamReader, destination: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if self.stalled:
                    continue  # swallowed: the other side waits forever
                destination.write(data)
                await destination.drain()
        finally:
            destination.close()
