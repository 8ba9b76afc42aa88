"""Relaying an upstream response (JSON or SSE) to the client as it arrives, judging every message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mcp_gateway.errors import UpstreamError, UpstreamProtocolError, UpstreamSessionGone, UpstreamTimeout
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.context import Outcome, OutcomeKind
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.sessions import EventIds
from mcp_gateway.proxy.sse import SSEEvent, SSEParser, frame
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
    seal: Callable[[str], Awaitable[str]] | None  # initialize: seals the upstream's session id into the gateway's
    resumable: bool  # handshake era: a stream closed after an event id is resumed, not failed
    reject_server_request: Callable[[Any, str], None] | None  # answers a refused server request upstream
    event_ids: EventIds | None = None  # handshake sessions: binds relayed SSE event ids to the session


async def relay_response(
    response: UpstreamResponse,
    *,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    options: RelayOptions,
) -> Outcome:
    """Relay one upstream response to the client; return how the exchange ended."""
    try:
        return await _relay(response, send, judge, state, options)
    finally:
        await response.aclose()


async def _relay(
    response: UpstreamResponse, send: Send, judge: UpstreamMessageJudge, state: StreamState, options: RelayOptions
) -> Outcome:
    status = response.status
    if status == 404 and options.session_sent:
        # MCP transports §Session Management: the upstream ended the session; the client gets 404 and
        # re-initializes with a new one.
        raise UpstreamSessionGone("Session not found")
    if 300 <= status < 400:
        # SECURITY.md: upstream 3xx answers are neither followed nor relayed (a redirect could carry the
        # client elsewhere, or expose a Location the upstream meant for the gateway).
        text = f"Bad Gateway: the upstream redirected ({status}); the gateway follows no redirects"
        return await _fail(send, state, text, error="upstream_redirect")
    extra: list[tuple[bytes, bytes]] = []
    if options.seal is not None and status == 200:
        # The upstream's id never reaches the client: only the sealed gateway id does. An upstream
        # that runs without sessions still gets one from us, so that the client's next requests
        # (which must carry it) stay bound to this principal.
        upstream_id = response.header(b"mcp-session-id") or b""
        extra.append((b"mcp-session-id", (await options.seal(upstream_id.decode("latin-1"))).encode("ascii")))
    content_type = (response.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if content_type == b"text/event-stream" and status == 200:
        return await _relay_sse(response, send, judge, state, options, extra)
    try:
        body = await response.read(options.max_body_bytes)
    except UpstreamError as exc:
        text = "Bad Gateway: the upstream's response could not be read"
        return await _fail(send, state, text, kind=exc.outcome, error=type(exc).__name__)
    if status in _CREDENTIAL_STATUSES:
        return await _fail(send, state, f"Bad Gateway: the upstream refused the gateway's credentials ({status})")
    if status == 202 or (not body and status < 300):
        if state.request_id is not None:
            # MCP transports §Sending Messages: a request is answered with JSON or an SSE stream.
            return await _fail(send, state, f"Bad Gateway: the upstream answered {status} without a response")
        await respond(send, status, b"", extra)
        return Outcome("ok", status)
    if status == 405:
        # The upstream offers no standalone stream or no session termination (both are optional).
        await respond(send, 405, jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, "Method Not Allowed upstream"))
        return Outcome("upstream_error", 405)
    if content_type != b"application/json":
        return await _fail(send, state, f"Bad Gateway: the upstream answered {status} with an unusable body")
    if status >= 400:
        return await _relay_error(send, status, judge.redact(body), state)
    out = judge.judge(body, state)
    if out is None or (state.request_id is not None and not state.answered):
        return await _fail(send, state, "Bad Gateway: the upstream sent an invalid JSON-RPC message")
    await respond(send, status, out, extra)
    return Outcome(state.outcome or "ok", status)


async def _relay_error(send: Send, status: int, body: bytes, state: StreamState) -> Outcome:
    # Relay an upstream HTTP error only as a well-formed JSON-RPC error we re-serialize ourselves.
    try:
        message = json.loads(body)
        error = message["error"]
        code, text = error["code"], error["message"]
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        return await _fail(send, state, f"Bad Gateway: the upstream answered {status}")
    # `data` carries what the client needs to act (a missing capability, the URI not found); it was
    # parsed above, so what goes out is our own serialization of valid JSON, never the raw bytes.
    await respond(send, status, jsonrpc.error_body(state.request_id, code, text[:500], error.get("data")))
    return Outcome("upstream_error", status)


async def _fail(
    send: Send, state: StreamState, text: str, *, kind: OutcomeKind = "upstream_error", error: str | None = None
) -> Outcome:
    await respond(send, 502, jsonrpc.error_body(state.request_id, jsonrpc.INTERNAL_ERROR, text))
    return Outcome(kind, 502, error)


async def _relay_sse(
    response: UpstreamResponse,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    options: RelayOptions,
    extra: list[tuple[bytes, bytes]],
) -> Outcome:
    await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *extra]})
    pending: list[bytes] = []
    failed: OutcomeKind | None = None
    failure: str | None = None
    try:
        await _pump_events(response, send, judge, state, options, pending)
    except UpstreamTimeout:
        failed, failure = "timeout", "Gateway Timeout: the upstream stopped sending"
    except UpstreamProtocolError:
        failed, failure = "upstream_error", "Bad Gateway: the upstream sent a malformed stream"
    except UpstreamError:
        failed, failure = "upstream_error", "Bad Gateway: the upstream connection failed"
    kind: OutcomeKind
    if state.request_id is not None and not state.answered:
        if failure is None and options.resumable and state.last_event_id is not None:
            # MCP transports (2025-11-25) §Resumability: the server may close the stream after an event
            # with an id; the client resumes with GET + Last-Event-ID and gets the answer there.
            kind = "stream_closed"
        else:
            # The client is owed an answer: say what happened instead of leaving it waiting.
            failure = failure or "Bad Gateway: the upstream ended the stream without a valid response"
            kind = failed or "upstream_error"
            pending.append(frame(jsonrpc.error_body(state.request_id, jsonrpc.INTERNAL_ERROR, failure)))
    elif state.answered:
        kind = state.outcome or "ok"
    else:
        kind = failed or "ok"
    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
    return Outcome(kind, 200)


async def _pump_events(
    response: UpstreamResponse,
    send: Send,
    judge: UpstreamMessageJudge,
    state: StreamState,
    options: RelayOptions,
    pending: list[bytes],
) -> None:
    """Relay events as they arrive; the events of one read go out in one write, and the read that ends
    the upstream body is left in `pending` to go out with the end of ours."""
    parser = SSEParser(options.max_event_bytes)
    batches = response.aiter_batches()
    async for chunks in batches:
        complete = False
        for chunk in chunks:
            for event in parser.feed(chunk):
                out = _judge_event(event, judge, state, options)
                if out is None:
                    continue
                pending.append(out)
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
            return
        if pending and not response.body_complete:
            await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
            pending.clear()
    parser.close()


def _judge_event(
    event: SSEEvent, judge: UpstreamMessageJudge, state: StreamState, options: RelayOptions
) -> bytes | None:
    """The frame to relay for one upstream event, or None to drop it."""
    data = event.data
    if data:
        out = judge.judge(data, state)
        if state.rejected_server_requests:
            # Answer a refused server request at once: the upstream is waiting for it, and this stream
            # does not end until it gets an answer.
            reject = options.reject_server_request
            for request_id, method in state.rejected_server_requests:
                if reject is not None:
                    reject(request_id, method)
            state.rejected_server_requests.clear()
        if out is None:
            return None
    else:
        # No message: a keep-alive comment, or a priming event (an id with empty data) that lets the
        # client resume before the first message arrives (MCP 2025-11-25).
        out = data
    event_id = event.id
    if event_id is not None:
        if options.event_ids is not None:
            event_id = options.event_ids.tag(event_id)
        state.last_event_id = event_id
    return frame(out, event_id=event_id, event=event.event, retry=event.retry)
