"""The served process's life cycle: a drained shutdown on SIGTERM, a reload on SIGHUP, and the pid file.

SIGTERM (or SIGINT): uvicorn stops accepting and closes idle connections; standalone SSE streams (`GET
/{server}/mcp`), which would otherwise hold the drain to its deadline, are ended at once with a clean end of
body (handshake-era clients resume them with `Last-Event-ID`, on another replica if need be); calls in
flight run on for `shutdown_grace_seconds`, and those still running then are cancelled, which the pipeline
audits as `aborted`. The audit store is closed (committing what is queued) by the lifespan shutdown, and the
process exits 0: a drained stop is a clean one, not a death by signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import uvicorn

from mcp_gateway.transport.asgi import Message, Receive, Scope, Send, respond_json

logger = logging.getLogger("mcp_gateway")
_GC_GEN0_THRESHOLD = 20_000


class StreamDrain:
    """ASGI middleware that knows the open standalone SSE streams and ends them cleanly when draining."""

    __slots__ = ("_app", "_ending", "_streams", "draining")

    def __init__(self, app: Any) -> None:
        self._app = app
        self._streams: dict[asyncio.Task[Any], list[bool]] = {}  # task → [response started, response ended]
        self._ending: set[asyncio.Task[Any]] = set()
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].endswith("/mcp"):
            try:
                await self._app(scope, receive, send)
            except asyncio.CancelledError:
                if not self.draining:
                    raise
                # The grace deadline cancelled a call still running (the pipeline has audited it as aborted):
                # answer it as what it is rather than leave uvicorn to make a 500 of it.
                await _end_response(send)
            return
        if self.draining:
            await respond_json(send, 503, {"error": "Service Unavailable: shutting down"}, [(b"retry-after", b"1")])
            return
        task = asyncio.current_task()
        assert task is not None
        progress = [False, False]

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                progress[0] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                progress[1] = True
            await send(message)

        self._streams[task] = progress
        try:
            await self._app(scope, receive, tracked)
        except asyncio.CancelledError:
            if task not in self._ending or task.uncancel() > 0:
                raise  # someone else's cancellation (the grace deadline, a client gone): not ours to swallow
            if not progress[0]:
                await respond_json(send, 503, {"error": "Service Unavailable: shutting down"})
            elif not progress[1]:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            del self._streams[task]
            self._ending.discard(task)

    def begin(self) -> int:
        """Start draining: refuse new streams and end the open ones; returns how many were ended."""
        self.draining = True
        for task in self._streams:
            if task not in self._ending:
                self._ending.add(task)
                task.cancel()
        return len(self._streams)


async def _end_response(send: Send) -> None:
    try:
        await respond_json(send, 503, {"error": "Service Unavailable: the call was cut short by a shutdown"})
    except RuntimeError:  # the response had begun (a stream): end it
        with contextlib.suppress(RuntimeError, OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's drain, a SIGHUP reload hook and a pid file."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        drain: StreamDrain,
        pid_file: Path | None,
        on_reload: Callable[[], object],
        on_shutdown: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.pid_file = pid_file
        self.on_reload = on_reload
        self.on_shutdown = on_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sys.platform != "win32":
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload)
        if self.pid_file is not None and self.started:
            try:
                self.pid_file.write_text(f"{os.getpid()}\n")
            except OSError as exc:
                logger.warning("cannot write the pid file %s (%s); `reload` will need --pid", self.pid_file, exc)

    def _reload(self) -> None:
        try:
            self.on_reload()
        except Exception:  # a reload never takes the server down
            logger.exception("reload failed unexpectedly; the running configuration is kept")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        ended = self.drain.begin()
        logger.info(
            "draining: %d stream(s) ended, calls in flight have %ss to finish",
            ended,
            self.config.timeout_graceful_shutdown,
        )
        if sys.platform != "win32":
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await super().shutdown(sockets)
        self._remove_pid_file()

    def _remove_pid_file(self) -> None:
        if self.pid_file is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_file.read_text().strip()) == os.getpid():
                self.pid_file.unlink()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises a captured SIGTERM once served, so the process would die by the signal; a
            # drained shutdown is the clean exit an orchestrator asked for: exit status 0.
            self._captured_signals.clear()


def tune_gc() -> None:
    # A served process: what exists once start-up is done (modules, config, routes, keys) lives as long as
    # the process, so it leaves the collector's generations for good, and the youngest generation is
    # collected less often: a request allocates a few hundred tracked objects, nearly all of them freed by
    # reference counting when it ends, and the default threshold (700) would scan the survivors every few
    # requests.
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
