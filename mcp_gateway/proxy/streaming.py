"""Relaying an upstream response (JSON or SSE) to the client as it arrives, judging every message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

from mcp_gateway.errors import SessionNotFound, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.asgi import Receive, Send, respond
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.sse import SSEParser, frame
from mcp_gateway.upstream.http11 import UpstreamResponse

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx and friends buffer responses unless told not to; SSE must flow event by event.
    (b"x-accel-buffering", b"no"),
]


class DisconnectWatch:
    """Cancels the enclosed work when the client disconnects, and swallows only that cancellation.

    MCP 2026-07-28: closing the response stream is cancellation, so the upstream connection is
    closed. In the handshake eras disconnection is not cancellation: closing our leg lets the
    upstream keep the messages for the client to resume with Last-Event-ID.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.disconnected = False
        self._done = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self._done and self._task is not None:
                    self.disconnected = True
                    self._task.cancel()
                return

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._done = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.disconnected and exc_type is asyncio.CancelledError and self._task is not None:
            self._task.uncancel()
            return True
        return False


async def relay_response(
    response: UpstreamResponse,
    *,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    ctx: Any,
    max_event_bytes: int,
    max_body_bytes: int,
    session_sent: bool,
    seal: Callable[[str], str] | None,
) -> None:
    try:
        await _relay(response, send, judge, state, ctx, max_event_bytes, max_body_bytes, session_sent, seal)
    finally:
        await response.aclose()


async def _relay(
    response: UpstreamResponse,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    ctx: Any,
    max_event_bytes: int,
    max_body_bytes: int,
    session_sent: bool,
    seal: Callable[[str], str] | None,
) -> None:
    status = response.status
    if status == 404 and session_sent:
        # MCP transports §Session Management: the upstream ended the session; the client gets 404 and
        # re-initializes with a new one.
        raise SessionNotFound("Session not found")
    extra: list[tuple[bytes, bytes]] = []
    if seal is not None and status == 200:
        upstream_id = response.header(b"mcp-session-id")
        if upstream_id is not None:
            # The upstream's id never reaches the client: only the sealed gateway id does.
            extra.append((b"mcp-session-id", seal(upstream_id.decode("latin-1")).encode("ascii")))
    content_type = (response.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    ctx.http_status = status
    if content_type == b"text/event-stream" and status == 200:
        await _relay_sse(response, send, judge, state, ctx, max_event_bytes, extra)
        return
    body = await _read(response, max_body_bytes, state, ctx)
    if body is None:
        await _fail(send, state, ctx, "Bad Gateway: the upstream's response could not be read")
        return
    if status == 202 or (not body and status < 300):
        ctx.outcome = ctx.outcome or "ok"
        await respond(send, status, b"", extra)
        return
    if content_type != b"application/json":
        await _fail(send, state, ctx, f"Bad Gateway: the upstream answered {status} with an unusable body")
        return
    if status >= 400:
        await _relay_error(send, status, body, state, ctx)
        return
    out = judge.judge(body, state)
    if out is None or (state.request_id is not None and not state.answered):
        await _fail(send, state, ctx, "Bad Gateway: the upstream sent an invalid JSON-RPC message")
        return
    ctx.outcome = state.outcome or "ok"
    await respond(send, status, out, extra)


async def _read(response: UpstreamResponse, cap: int, state: StreamState, ctx: Any) -> bytes | None:
    try:
        return await response.read(cap)
    except UpstreamError as exc:
        ctx.outcome = "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
        ctx.error = type(exc).__name__
        return None


async def _relay_error(send: Send, status: int, body: bytes, state: StreamState, ctx: Any) -> None:
    # Relay an upstream HTTP error only as a well-formed JSON-RPC error we re-serialize ourselves.
    try:
        message = json.loads(body)
        error = message["error"]
        code, text = error["code"], error["message"]
        if not isinstance(code, int) or not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        await _fail(send, state, ctx, f"Bad Gateway: the upstream answered {status}")
        return
    ctx.outcome = "upstream_error"
    await respond(send, status, jsonrpc.error_body(state.request_id, code, text[:500]))


async def _fail(send: Send, state: StreamState, ctx: Any, text: str) -> None:
    ctx.outcome = ctx.outcome or "upstream_error"
    ctx.http_status = 502
    await respond(send, 502, jsonrpc.error_body(state.request_id, jsonrpc.INTERNAL_ERROR, text))


async def _relay_sse(
    response: UpstreamResponse,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    ctx: Any,
    max_event_bytes: int,
    extra: list[tuple[bytes, bytes]],
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *extra]})
    parser = SSEParser(max_event_bytes)
    failure: str | None = None
    try:
        async for chunk in response.aiter_body():
            for event in parser.feed(chunk):
                if event.data is None:
                    await send({"type": "http.response.body", "body": event.raw, "more_body": True})
                    continue
                out = judge.judge(event.data, state)
                if out is None:
                    continue
                raw = event.raw if out is event.data else frame(out, event_id=event.id, event=event.event)
                await send({"type": "http.response.body", "body": raw, "more_body": True})
        parser.close()
    except UpstreamTimeout:
        ctx.outcome, failure = "timeout", "Gateway Timeout: the upstream stopped sending"
    except UpstreamProtocolError:
        ctx.outcome, failure = "upstream_error", "Bad Gateway: the upstream sent a malformed stream"
    except UpstreamError:
        ctx.outcome, failure = "upstream_error", "Bad Gateway: the upstream connection failed"
    if state.request_id is not None and not state.answered:
        # The client is owed an answer: say what happened instead of leaving it waiting.
        failure = failure or "Bad Gateway: the upstream ended the stream without a valid response"
        ctx.outcome = ctx.outcome or "upstream_error"
        error = jsonrpc.error_body(state.request_id, jsonrpc.INTERNAL_ERROR, failure)
        await send({"type": "http.response.body", "body": frame(error), "more_body": True})
    elif state.answered:
        ctx.outcome = state.outcome
    await send({"type": "http.response.body", "body": b"", "more_body": False})
