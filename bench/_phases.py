"""Opt-in per-phase CPU accounting for a benchmark gateway (`bench/_gateway_proc.py --phases`).

Nothing here is imported unless `--phases` is given: the gateway's own code has no hooks, so the mode
costs nothing when off. When on, `install()` wraps the pipeline's steps, in the running process only, with
the event loop thread's CPU clock (CLOCK_THREAD_CPUTIME_ID):

- a synchronous step is timed from call to return;
- an asynchronous step is timed only while its coroutine runs: each resumption of the coroutine is timed
  and summed, and the time it spends suspended (waiting for the upstream, the disk, other tasks) is not.
  So the figures stay exact under concurrency, where other calls run while one waits.

Phases (CPU of the event loop's thread unless said otherwise):

| phase | what is timed |
|---|---|
| parse | media types, reading the body, JSON parse and classification, era checks (pipeline's calls) |
| authenticate | `McpEndpoint._authenticate` (bearer token → principal; a cache hit after the first call) |
| session | `McpEndpoint._session` (handshake era: the sealed session id opened) |
| decide | `McpEndpoint._authorize`: policy decision, catalogue, rate limits |
| audit intent | `CallRecorder.intent`: building the intent record, queuing it, and resuming once durable |
| exchange | `UpstreamExchange._request`: credential, request encoded and written, response head awaited |
| upstream callbacks | the upstream connection's `data_received` callbacks: the response parsed as it arrives |
| relay | `relay_response`: judging and relaying the upstream's answer to the client |
| audit outcome | `CallRecorder.outcome` / `refusal`: building the outcome record and queuing it |
| audit wake-up | the writer thread's hand-back on the event loop (`handoff._settle`) |
| pipeline, other | the rest of `McpEndpoint.__call__`'s own steps (guard, forward plan, headers, DisconnectWatch) |
| audit writer thread | every thread but the event loop's: sealing, hashing, SQLite, fsync (its own CPU clock) |
| audit commit | of the writer thread, `commit_group`: sealing, inserting and committing a group (fsync included) |
| server and loop | the process's CPU minus all of the above: uvicorn's HTTP and ASGI layers, uvloop, other tasks |

`GET /__phases` (answered before the gateway sees it) returns the running totals as JSON.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import types
from collections.abc import Awaitable, Callable, Generator
from functools import wraps
from typing import Any

_clock = time.thread_time_ns
TOTALS: dict[str, list[int]] = {}  # phase → [ns, calls]


def _charge(phase: str, ns: int) -> None:
    slot = TOTALS.get(phase)
    if slot is None:
        slot = TOTALS[phase] = [0, 0]
    slot[0] += ns


def _count(phase: str) -> None:
    slot = TOTALS.get(phase)
    if slot is None:
        slot = TOTALS[phase] = [0, 0]
    slot[1] += 1


class _Timed:
    """Awaits `coro`, charging `phase` with the CPU of each of its resumptions (not its suspensions)."""

    __slots__ = ("coro", "phase")

    def __init__(self, coro: Any, phase: str) -> None:
        self.coro, self.phase = coro, phase

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, phase = self.coro, self.phase
        _count(phase)
        send: Any = None
        error: BaseException | None = None
        while True:
            start = _clock()
            try:
                yielded = coro.send(send) if error is None else coro.throw(error)
            except StopIteration as stop:
                _charge(phase, _clock() - start)
                return stop.value
            except BaseException:
                _charge(phase, _clock() - start)
                raise
            _charge(phase, _clock() - start)
            try:
                send, error = (yield yielded), None
            except BaseException as exc:
                send, error = None, exc


def timed_async(fn: Callable[..., Awaitable[Any]], phase: str) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _Timed:
        return _Timed(fn(*args, **kwargs), phase)

    return wrapper


def timed_sync(fn: Callable[..., Any], phase: str, *, count: bool = True) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if count:
            _count(phase)
        start = _clock()
        try:
            return fn(*args, **kwargs)
        finally:
            _charge(phase, _clock() - start)

    return wrapper


def _namespace(module: types.ModuleType, phase: str, names: tuple[str, ...]) -> types.SimpleNamespace:
    # A stand-in for `module` in one importer's namespace: only that importer's calls are timed.
    view = types.SimpleNamespace(**{k: getattr(module, k) for k in dir(module) if not k.startswith("__")})
    for name in names:
        setattr(view, name, timed_sync(getattr(module, name), phase, count=False))
    return view


def install() -> None:
    """Wrap the pipeline's steps (see the module docstring). Call before the app is built."""
    from mcp_gateway.audit import handoff
    from mcp_gateway.audit.sqlite import sink
    from mcp_gateway.proxy import era, exchange, jsonrpc, pipeline, recording
    from mcp_gateway.upstream import _connection

    endpoint = pipeline.McpEndpoint
    # Module globals are replaced with setattr: they are the pipeline's imports, not its exports.
    setattr(pipeline, "jsonrpc", _namespace(jsonrpc, "parse", ("parse_json", "classify", "require_target")))  # noqa: B010
    setattr(pipeline, "eras", _namespace(era, "parse", ("post_era", "check_request")))  # noqa: B010
    media = timed_sync(getattr(pipeline, "check_post_media_types"), "parse", count=False)  # noqa: B009
    setattr(pipeline, "check_post_media_types", media)  # noqa: B010
    setattr(pipeline, "read_body", timed_async(getattr(pipeline, "read_body"), "parse"))  # noqa: B009, B010
    endpoint.__call__ = timed_async(endpoint.__call__, "endpoint")  # type: ignore[method-assign]
    endpoint._authenticate = timed_async(endpoint._authenticate, "authenticate")  # type: ignore[method-assign]
    endpoint._session = timed_async(endpoint._session, "session")  # type: ignore[method-assign]
    endpoint._authorize = timed_async(endpoint._authorize, "decide")  # type: ignore[method-assign]
    recorder = recording.CallRecorder
    recorder.intent = timed_async(recorder.intent, "audit intent")  # type: ignore[method-assign]
    recorder.outcome = timed_sync(recorder.outcome, "audit outcome")  # type: ignore[method-assign]
    recorder.refusal = timed_sync(recorder.refusal, "audit outcome", count=False)  # type: ignore[method-assign]
    upstream = exchange.UpstreamExchange
    upstream._request = timed_async(upstream._request, "exchange")  # type: ignore[method-assign]
    conn = _connection.Connection
    conn.data_received = timed_sync(conn.data_received, "upstream callbacks", count=False)  # type: ignore[method-assign]
    setattr(exchange, "relay_response", timed_async(getattr(exchange, "relay_response"), "relay"))  # noqa: B009, B010
    setattr(handoff, "_settle", timed_sync(getattr(handoff, "_settle"), "audit wake-up", count=False))  # noqa: B009, B010
    # In the writer thread, on its own CPU clock: sealing, inserting and committing (with its fsync) a group.
    setattr(sink, "commit_group", timed_sync(getattr(sink, "commit_group"), "audit commit", count=False))  # noqa: B009, B010


def _other_threads_ns() -> int:
    main = threading.main_thread().ident
    total = 0
    for thread in threading.enumerate():
        if thread.ident is None or thread.ident == main:
            continue
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            total += time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
    return total


def snapshot() -> dict[str, Any]:
    return {
        "process_ns": time.process_time_ns(),
        "threads_ns": _other_threads_ns(),
        "phases": {k: list(v) for k, v in TOTALS.items()},
    }


def wrap_app(app: Any) -> Any:
    """`app` with `GET /__phases` answered before it: the totals so far, as JSON."""
    inner = type(app).__call__

    async def call(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__phases":
            body = json.dumps(snapshot()).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await inner(self, scope, receive, send)

    type(app).__call__ = call
    return app
