"""Relaying an upstream response (JSON or SSE) to the client as it arrives, judging every message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mcp_gateway.errors import SessionNotFound, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.sessions import EventIds
from mcp_gateway.proxy.sse import SSEParser, frame
from mcp_gateway.transport.asgi import Message, Receive, Send, respond
from mcp_gateway.upstream.http11 import UpstreamResponse

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx and friends buffer responses unless told not to; SSE must flow event by event.
    (b"x-accel-buffering", b"no"),
]
# Upstream statuses that speak about the gateway's own credential, never about the client's token:
# relaying them would send the client into an OAuth flow that cannot help.
_CREDENTIAL_STATUSES = frozenset({401, 403, 407})


class DisconnectWatch:
    """Cancels the enclosed work when the client disconnects, and swallows only that cancellation.

    MCP 2026-07-28: closing the response stream is cancellation, so the upstream connection is
    closed. In the handshake eras disconnection is not cancellation: closing our leg lets the
    upstream keep the messages for the client to resume with Last-Event-ID.

    Send the response through `watch.send`: once its last body message is out, a disconnect (which
    servers such as uvicorn report as soon as the response is complete) cancels nothing.
    """

    __slots__ = ("_done", "_receive", "_send", "_task", "_watcher", "disconnected")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.disconnected = False
        self._done = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._done = True
        await self._send(message)

    async def __aenter__(self) -> DisconnectWatch:
        task = self._task = asyncio.current_task()
        # The task's own loop: each asyncio.get_running_loop() costs a getpid() system call.
        loop = task.get_loop() if task is not None else asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch())
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
        completed = self._done  # the last body message went out through `send`
        self._done = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None and not completed:
            # Dropping our reference matters: the cancelled watcher keeps its CancelledError, whose
            # traceback holds the frame that holds us, and a cycle would be left for the cyclic GC to
            # find on every request.
            watcher.cancel()
        # Once the response is complete the watcher is left to end by itself: ASGI's receive() answers
        # http.disconnect as soon as a response has been sent, and the watcher then returns, cancelling
        # nothing. That spares creating and raising a CancelledError on every request.
        if self.disconnected and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            assert self._task is not None
            # Swallow our own cancellation only: if someone else (a shutdown) also cancelled this
            # task, the count stays above zero and the CancelledError goes on.
            return self._task.uncancel() == 0
        return False


@dataclass(slots=True)
class RelayOptions:
    """How one response is relayed; built per request by the handler."""

    max_event_bytes: int
    max_body_bytes: int
    session_sent: bool  # the request carried an upstream session id: a 404 means the session ended
    seal: Callable[[str], str] | None  # initialize: seals the upstream's session id into the gateway's
    resumable: bool  # handshake era: a stream closed after an event id is resumed, not failed
    reject_server_request: Callable[[Any, str], None] | None  # answers a refused server request upstream
    event_ids: EventIds | None = None  # handshake sessions: binds relayed SSE event ids to the session


async def relay_response(
    response: UpstreamResponse,
    *,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    ctx: Any,
    options: RelayOptions,
) -> None:
    try:
        await _relay(response, send, judge, state, ctx, options)
    finally:
        await response.aclose()


async def _relay(
    response: UpstreamResponse,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    ctx: Any,
    options: RelayOptions,
) -> None:
    status = response.status
    if status == 404 and options.session_sent:
        # MCP transports §Session Management: the upstream ended the session; the client gets 404 and
        # re-initializes with a new one.
        ctx.outcome = "session_not_found"
        ctx.http_status = 404
        raise SessionNotFound("Session not found")
    extra: list[tuple[bytes, bytes]] = []
    if options.seal is not None and status == 200:
        # The upstream's id never reaches the client: only the sealed gateway id does. An upstream
        # that runs without sessions still gets one from us, so that the client's next requests
        # (which must carry it) stay bound to this principal.
        upstream_id = response.header(b"mcp-session-id") or b""
        extra.append((b"mcp-session-id", options.seal(upstream_id.decode("latin-1")).encode("ascii")))
    content_type = (response.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    ctx.http_status = status
    if content_type == b"text/event-stream" and status == 200:
        await _relay_sse(response, send, judge, state, ctx, options, extra)
        return
    body = await _read(response, options.max_body_bytes, ctx)
    if body is None:
        await _fail(send, state, ctx, "Bad Gateway: the upstream's response could not be read")
        return
    if status in _CREDENTIAL_STATUSES:
        await _fail(send, state, ctx, f"Bad Gateway: the upstream refused the gateway's credentials ({status})")
        return
    if status == 202 or (not body and status < 300):
        if state.request_id is not None:
            # MCP transports §Sending Messages: a request is answered with JSON or an SSE stream.
            await _fail(send, state, ctx, f"Bad Gateway: the upstream answered {status} without a response")
            return
        ctx.outcome = ctx.outcome or "ok"
        await respond(send, status, b"", extra)
        return
    if status == 405:
        # The upstream offers no standalone stream or no session termination (both are optional).
        ctx.outcome = "upstream_error"
        await respond(send, 405, jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, "Method Not Allowed upstream"))
        return
    if content_type != b"application/json":
        await _fail(send, state, ctx, f"Bad Gateway: the upstream answered {status} with an unusable body")
        return
    if status >= 400:
        await _relay_error(send, status, judge.redact(body), state, ctx)
        return
    out = judge.judge(body, state)
    if out is None or (state.request_id is not None and not state.answered):
        await _fail(send, state, ctx, "Bad Gateway: the upstream sent an invalid JSON-RPC message")
        return
    ctx.outcome = state.outcome or "ok"
    await respond(send, status, out, extra)


async def _read(response: UpstreamResponse, cap: int, ctx: Any) -> bytes | None:
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
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        await _fail(send, state, ctx, f"Bad Gateway: the upstream answered {status}")
        return
    ctx.outcome = "upstream_error"
    # `data` carries what the client needs to act (a missing capability, the URI not found); it was
    # parsed above, so what goes out is our own serialization of valid JSON, never the raw bytes.
    await respond(send, status, jsonrpc.error_body(state.request_id, code, text[:500], error.get("data")))


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
    options: RelayOptions,
    extra: list[tuple[bytes, bytes]],
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *extra]})
    parser = SSEParser(options.max_event_bytes)
    reject = options.reject_server_request
    event_ids = options.event_ids
    failure: str | None = None
    batches = response.aiter_batches()
    complete = False
    # Events are relayed as they arrive, but the events of one batch (whatever reached us in one read)
    # go out in one write, and the batch that ends the upstream body goes out with the end of ours.
    pending: list[bytes] = []
    try:
        async for chunks in batches:
            for chunk in chunks:
                for event in parser.feed(chunk):
                    data = event.data
                    if data:
                        out = judge.judge(data, state)
                        if state.rejected_server_requests:
                            # Answer a refused server request at once: the upstream is waiting for it, and
                            # this stream does not end until it gets an answer.
                            for request_id, method in state.rejected_server_requests:
                                if reject is not None:
                                    reject(request_id, method)
                            state.rejected_server_requests.clear()
                        if out is None:
                            continue
                    else:
                        # No message: a keep-alive comment, or a priming event (an id with empty data) that
                        # lets the client resume before the first message arrives (MCP 2025-11-25).
                        out = data
                    event_id = event.id
                    if event_id is not None:
                        if event_ids is not None:
                            event_id = event_ids.tag(event_id)
                        state.last_event_id = event_id
                    pending.append(frame(out, event_id=event_id, event=event.event, retry=event.retry))
                    if state.resumed and state.answered:
                        # A resumed stream ends with the response of the stream it resumes. Whatever an
                        # upstream replays after it is not this stream's: an event store that files events
                        # by request id alone (the example upstream's does) mixes in other sessions'.
                        complete = True
                        break
                if complete:
                    break
            if complete:
                await batches.aclose()  # the upstream connection is closed mid-body, never reused
                break
            if pending and not response.body_complete:
                await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                pending = []
        else:
            parser.close()
    except UpstreamTimeout:
        ctx.outcome, failure = "timeout", "Gateway Timeout: the upstream stopped sending"
    except UpstreamProtocolError:
        ctx.outcome, failure = "upstream_error", "Bad Gateway: the upstream sent a malformed stream"
    except UpstreamError:
        ctx.outcome, failure = "upstream_error", "Bad Gateway: the upstream connection failed"
    if state.request_id is not None and not state.answered:
        if failure is None and options.resumable and state.last_event_id is not None:
            # MCP transports (2025-11-25) §Resumability: the server may close the stream after an event
            # with an id; the client resumes with GET + Last-Event-ID and gets the answer there.
            ctx.outcome = "stream_closed"
        else:
            # The client is owed an answer: say what happened instead of leaving it waiting.
            failure = failure or "Bad Gateway: the upstream ended the stream without a valid response"
            ctx.outcome = ctx.outcome or "upstream_error"
            pending.append(frame(jsonrpc.error_body(state.request_id, jsonrpc.INTERNAL_ERROR, failure)))
    elif state.answered:
        ctx.outcome = state.outcome
    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
