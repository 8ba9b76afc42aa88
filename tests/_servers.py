"""Test helpers that serve ASGI apps on real loopback sockets, for behaviour an in-memory transport hides (SSE).

    async with serve_asgi(app) as base_url:          # "http://127.0.0.1:PORT"
        ...
    async with run_example_server() as mcp_url:      # "http://127.0.0.1:PORT/mcp"
        ...
    refused_url()                                    # "http://127.0.0.1:PORT", where nothing listens

Both wait until uvicorn is listening (an event, not a poll) and, on exit, shut it down and wait for it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp


class _Server(uvicorn.Server):
    """A uvicorn server that tells an awaiting task when its startup has finished, successfully or not."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = anyio.Event()
        self.startup_error: BaseException | None = None
        self.done = anyio.Event()
        self.scope = anyio.CancelScope(shield=True)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:  # uvicorn exits the process when a bind or the lifespan startup fails
            self.startup_error = exc
            self.should_exit = True
        finally:
            self.startup_done.set()

    async def serve_until_done(self) -> None:
        # Shielded: a test body cancelled from outside must still get a graceful shutdown (should_exit),
        # not a cancelled serve() that skips the app's lifespan shutdown and leaves the socket open.
        with self.scope:
            try:
                await self.serve()
            finally:
                self.done.set()

    @property
    def port(self) -> int:
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port


@asynccontextmanager
async def serve_asgi(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 5.0,
    **config: Any,
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on ``host`` and a port the OS picks; yield its base URL (no trailing slash).

    The lifespan runs (``lifespan="on"``), so apps that start work in it, like the MCP SDK's session manager,
    are ready when the URL is yielded. ``config`` goes to ``uvicorn.Config`` (e.g. ``http="h11"``,
    ``ssl_certfile=...``; with TLS the URL starts with ``https``). Streams still open at exit are cancelled
    after ``shutdown_timeout`` seconds, so a leaked SSE connection cannot hang a test.
    """
    config.setdefault("log_level", "warning")
    config.setdefault("timeout_graceful_shutdown", shutdown_timeout)
    server = _Server(uvicorn.Config(app, host=host, port=0, lifespan="on", **config))
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_until_done)
        with anyio.move_on_after(startup_timeout):
            await server.startup_done.wait()
        started = server.started and server.startup_error is None
        if not started:
            server.scope.cancel()  # nothing is listening; a startup still running is abandoned
        else:
            scheme = "https" if config.get("ssl_certfile") else "http"
            authority = f"[{host}]" if ":" in host else host
            try:
                yield f"{scheme}://{authority}:{server.port}"
            except Exception as exc:  # re-raised below, outside the task group, so that it is not wrapped in a group
                failure = exc
            finally:
                server.should_exit = True
                with anyio.move_on_after(shutdown_timeout + 5, shield=True):
                    await server.done.wait()
                server.scope.cancel()  # only matters if the graceful shutdown itself hung
    if failure is not None:
        raise failure
    if not started:
        reason = "failed (its log says why)" if server.startup_error else f"took over {startup_timeout} s"
        raise RuntimeError(f"uvicorn did not start on {host}: startup {reason}") from server.startup_error


def free_port() -> int:
    """A loopback port the OS picked, bound and released at once: nothing listens on it afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def refused_url() -> str:
    """A loopback URL (no path) where nothing listens: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@asynccontextmanager
async def run_example_server(**config: Any) -> AsyncIterator[str]:
    """Serve ``examples/everything_server.py`` (a fresh instance) and yield its MCP endpoint URL, ``.../mcp``."""
    from examples.everything_server import build_app

    async with serve_asgi(build_app(), **config) as base_url:
        yield f"{base_url}/mcp"
