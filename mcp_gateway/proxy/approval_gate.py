"""Holding a call that needs a person's approval: recorded, held (with progress), then forwarded or refused.

The pipeline calls `ApprovalGate.hold` after authorization and before the intent record and the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable
from typing import Any, Final

from mcp_gateway.approvals.ledger import ApprovalLedger, ApprovalRefused, Decided, PendingApproval
from mcp_gateway.approvals.rules import (
    approval_json,
    binding_of,
    progress_body,
    refusal_text,
    rule_for,
    waiting_message,
)
from mcp_gateway.audit.record import AuditRecord, arguments_digest, arguments_json
from mcp_gateway.config import ApprovalRule
from mcp_gateway.errors import HTTPError
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.context import ABORTED, CallContext, Outcome
from mcp_gateway.proxy.recording import CallRecorder
from mcp_gateway.proxy.sse import frame
from mcp_gateway.transport.asgi import Message, Receive, Send, header, respond

_SSE_START: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_MAX_SHOWN_ARGUMENTS: Final = 64 * 1024  # characters of the arguments an approver is shown


class ApprovalGate:
    """Decides nothing itself: holds calls in its `ledger` until a person (through the approvals API) or the
    clock does, and tells the audit log each step, linked to the call's `event_id`."""

    def __init__(self, recorder: CallRecorder, clock: Callable[[], float], *, heartbeat_seconds: float = 10.0) -> None:
        self.recorder = recorder
        self.ledger = ApprovalLedger(clock)
        self.heartbeat_seconds = heartbeat_seconds  # how often a waiting client with a progressToken hears of it

    async def hold(self, ctx: CallContext, receive: Receive, send: Send) -> tuple[Send, str | None] | Outcome:
        """The `send` to answer with (wrapped once a wait opened an SSE stream) and the `approval` field the
        call's records carry when it may be forwarded now; else the outcome it was answered (and recorded) with.

        Writes nothing into `ctx` (the pipeline does, with what this returns); the recorder keeps its own
        bookkeeping there (the call's event id), so that every record of the call shares it.
        """
        msg, principal = ctx.message, ctx.principal
        assert msg is not None
        rule = rule_for(ctx.route.entry, msg.method, msg.name)
        if rule is None or principal is None or msg.name is None:
            return send, None
        requested = self._build(ctx, "approval_requested")  # draws the call's event id first
        try:
            pending = self.ledger.open(
                binding_of(principal, ctx.server, msg.name, arguments_digest(msg.arguments)),
                principal,
                rule,
                event_id=ctx.event_id or "",
                request_context=msg.request_context,
                arguments=arguments_json(msg.arguments, self.recorder.redact_keys)[:_MAX_SHOWN_ARGUMENTS],
            )
        except ApprovalRefused as exc:
            raise HTTPError(exc.message, status_code=exc.status, jsonrpc_code=jsonrpc.INTERNAL_ERROR) from None
        if requested is not None:
            detail = _requested_detail(pending)
            record = dataclasses.replace(
                requested, approval=approval_json(pending.id, None, "pending", None), detail=detail
            )
            try:
                # Fail closed: a call is held (and may later be forwarded) only once its request is on record.
                await self.recorder.sink.append(record)
            except BaseException:
                self.ledger.withdraw(pending)
                raise
        token = _progress_token(msg.body)
        stream = _WaitingStream(send, token) if token is not None else None
        try:
            decided = await self._wait(pending, receive, stream)
        except asyncio.CancelledError:
            # Cancelled (the server stopping without a shutdown of ours): never forwarded, and said so.
            self._decided(ctx, pending, self.ledger.withdraw(pending), ABORTED)
            raise
        if decided.binding != pending.binding:  # defence in depth: a decision is only ever about its own call
            decided = dataclasses.replace(decided, resolution="deny", reason="binding mismatch")
        if decided.resolution == "approve":
            approval = self._decided(ctx, pending, decided, None)
            return (stream.continuation() if stream is not None and stream.started else send), approval
        return await self._refuse(ctx, rule, pending, decided, stream, send)

    async def _wait(self, pending: PendingApproval, receive: Receive, stream: _WaitingStream | None) -> Decided:
        """Until a decision, expiry, or the client going away (withdrawn); progress every heartbeat."""
        loop = asyncio.get_running_loop()
        gone = loop.create_task(_disconnected(receive))
        started = loop.time()
        deadline = started + max(0.0, pending.expires_at - self.ledger.clock())
        try:
            if stream is not None and not await stream.progress(_message(pending, deadline - started)):
                return self.ledger.withdraw(pending)
            while not pending.decided.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return self.ledger.expire(pending)
                pause = min(remaining, self.heartbeat_seconds) if stream is not None else remaining
                waits: set[asyncio.Future[object]] = {pending.decided, gone}  # type: ignore[arg-type]
                await asyncio.wait(waits, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
                if pending.decided.done():
                    break
                if gone.done():
                    return self.ledger.withdraw(pending)
                left = deadline - loop.time()
                if stream is not None and left > 0 and not await stream.progress(_message(pending, left)):
                    return self.ledger.withdraw(pending)
            return pending.decided.result()
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone  # the exchange reads `receive` next: no reader of ours may be left behind

    async def _refuse(
        self,
        ctx: CallContext,
        rule: ApprovalRule,
        pending: PendingApproval,
        decided: Decided,
        stream: _WaitingStream | None,
        send: Send,
    ) -> Outcome:
        msg = ctx.message
        assert msg is not None and msg.name is not None
        text = refusal_text(msg.name, decided.resolution, decided.reason, rule.timeout_seconds)
        data = {"approval": _approval_value(pending, decided)}
        if decided.resolution == "withdrawn":
            outcome = ABORTED  # nobody left to answer
        else:
            # A shutdown is the gateway's failure (503 if the status is not sent yet), a refusal the policy's.
            shutdown = decided.resolution == "shutdown"
            code = jsonrpc.INTERNAL_ERROR if shutdown else jsonrpc.INVALID_PARAMS
            body = jsonrpc.error_body(msg.id, code, text, data)
            outcome = Outcome("denied", 503 if shutdown and not (stream and stream.started) else 200)
            if outcome.http_status == 503:
                await respond(send, 503, body, [(b"retry-after", b"5")])
            elif stream is not None and stream.started:
                await stream.end(body)
            else:
                await respond(send, 200, body)
        # This record closes the call: it was never forwarded, so it has no intent and no outcome.
        self._decided(ctx, pending, decided, outcome)
        return outcome

    def _build(self, ctx: CallContext, event_type: str, outcome: Outcome | None = None) -> AuditRecord | None:
        recorder = self.recorder
        return recorder.build(ctx, "event", event_type=event_type, outcome=outcome) if recorder.enabled else None

    def _decided(self, ctx: CallContext, pending: PendingApproval, decided: Decided, refused: Outcome | None) -> str:
        """Record how the wait ended (at the time it did); returns the `approval` field the call's records carry."""
        approval = approval_json(pending.id, decided.approver, decided.resolution, decided.reason)
        record = self._build(ctx, "approval_decided", refused)
        if record is not None:
            changes: dict[str, Any] = {"approval": approval, "timestamp": decided.at}
            if refused is not None:
                changes.update(decision="deny", policy_rule=f"approvals.{pending.binding.tool}")
            self.recorder.sink.append_nowait(dataclasses.replace(record, **changes))
        return approval


class _WaitingStream:
    """The held call's response as an SSE stream, opened at the first progress notification."""

    def __init__(self, send: Send, token: str | int) -> None:
        self.send = send
        self.token = token
        self.started = False
        self.sent = 0  # MCP progress: the value increases with every notification

    async def progress(self, message: str) -> bool:
        """Send one notification; False when the client is gone."""
        progress, self.sent = self.sent, self.sent + 1
        try:
            if not self.started:
                self.started = True
                await self.send({"type": "http.response.start", "status": 200, "headers": list(_SSE_START)})
            event = frame(progress_body(self.token, progress, message))
            await self.send({"type": "http.response.body", "body": event, "more_body": True})
        except OSError:
            return False
        return True

    async def end(self, body: bytes) -> None:
        with contextlib.suppress(OSError):
            await self.send({"type": "http.response.body", "body": frame(body), "more_body": False})

    def continuation(self) -> Send:
        return _Continuation(self.send)


class _Continuation:
    """The exchange's answer poured into the SSE stream the wait opened: an SSE answer passes through, a
    JSON answer (or a gateway error) becomes one event; the answer's own status line is already sent."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._sse = False
        self._buffer: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            content_type = header(message.get("headers", []), b"content-type") or b""
            self._sse = content_type.split(b";", 1)[0].strip().lower() == b"text/event-stream"
            return
        if kind != "http.response.body":
            await self._send(message)
            return
        more = bool(message.get("more_body", False))
        body = message.get("body", b"")
        if self._sse:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
            return
        self._buffer.append(body)
        if not more:
            data = b"".join(self._buffer)
            await self._send({"type": "http.response.body", "body": frame(data) if data else b"", "more_body": False})


def _progress_token(body: dict[str, object]) -> str | int | None:
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    # MCP basic/utilities/progress: a string or an integer.
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def _message(pending: PendingApproval, seconds_left: float) -> str:
    return waiting_message(pending.id, pending.rule.approver_scope, seconds_left)


def _approval_value(pending: PendingApproval, decided: Decided) -> dict[str, Any]:
    return {"id": pending.id, "approver": decided.approver, "decision": decided.resolution, "reason": decided.reason}


def _requested_detail(pending: PendingApproval) -> str:
    detail = {"approver_scope": pending.rule.approver_scope, "expires_at": pending.expires_at}
    return json.dumps(detail, separators=(",", ":"), sort_keys=True)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
