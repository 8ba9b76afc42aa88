"""Turning one exchange into audit records: intent before forwarding, outcome after, refusals."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from mcp_gateway.audit.record import AuditRecord, arguments_digest, arguments_json, new_event_id
from mcp_gateway.audit.sink import AuditSink, NullAuditSink
from mcp_gateway.audit.summary import RefusalSummarizer
from mcp_gateway.config import GatewayConfig
from mcp_gateway.observe import context as log_ids
from mcp_gateway.observe import tracing
from mcp_gateway.proxy.context import CallContext, Outcome
from mcp_gateway.proxy.route import Route
from mcp_gateway.transport.asgi import Scope


def token_reference(token: str) -> str:
    """How a record names a presented token that did not verify: its SHA-256, never its value.

    The same form `Principal.token_id` takes for a verified token without a `jti`, so one token is
    named alike whether or not it verified (SECURITY.md: records name a token by its jti or hash).
    """
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


class CallRecorder:
    """Builds records from a CallContext (pure) and hands them to the sink (the only I/O)."""

    def __init__(self, config: GatewayConfig, sink: AuditSink, summarizer: RefusalSummarizer) -> None:
        self.sink = sink
        # `[audit] enabled = false`: the sink drops every record, so none is built. The pipeline's
        # bookkeeping (intent written, closed) is kept as if they had been, so control flow is the same.
        self.enabled = not isinstance(sink, NullAuditSink)
        self.summarizer = summarizer
        self.policy_version = config.policy_version
        self.store_arguments = config.audit.store_arguments
        self.redact_keys = tuple(config.audit.redact_keys)

    def begin(self, route: Route, scope: Scope, now: float) -> CallContext:
        client = scope.get("client")
        return CallContext(route, now, client[0] if client else None)

    def security_event(self, route: Route, event_type: str, detail: dict[str, Any], now: float) -> None:
        """A record of its own for what the gateway saw of an upstream (identity mismatch, quarantine)."""
        if not self.enabled:
            return
        self.sink.append_nowait(
            AuditRecord(
                phase="event",
                timestamp=now,
                event_id=new_event_id(now),
                mcp_server=route.name,
                tool=detail.get("tool"),
                decision="deny",
                policy_rule="tools_sha256" if event_type == "tool_quarantined" else "tls_spki_sha256",
                policy_version=self.policy_version,
                outcome=event_type,
                upstream_identity=route.upstream_identity,
                event_type=event_type,
                detail=json.dumps(detail, separators=(",", ":"), sort_keys=True),
            )
        )

    async def intent(self, ctx: CallContext) -> None:
        # Durable before forwarding: AuditUnavailable propagates and the call is refused with 503.
        if self.enabled:
            with tracing.step("audit intent", ctx):  # the durable write is what this step's span times
                await self.sink.append(self.build(ctx, "intent"))
        ctx.intent_written = True

    def outcome(self, ctx: CallContext, outcome: Outcome) -> None:
        """Close a call whose intent was recorded with what happened to it (at most once)."""
        if ctx.closed:
            return
        ctx.closed = True
        if self.enabled:
            msg = ctx.message
            # The intent carries who and what; the outcome, what happened (see audit.record.outcome_of).
            self.sink.append_nowait(
                AuditRecord(
                    phase="outcome",
                    timestamp=ctx.timestamp,
                    event_id=ctx.event_id or new_event_id(),
                    mcp_server=ctx.server,
                    method=msg.method if msg is not None else None,
                    tool=msg.name if msg is not None else None,
                    outcome=outcome.kind,
                    http_status=outcome.http_status,
                    latency_ms=round((time.perf_counter() - ctx.started) * 1000, 3),
                    detail=json.dumps({"error": outcome.error}) if outcome.error else None,
                    upstream_credential=outcome.credential.to_json() if outcome.credential else None,
                    approval=ctx.approval,
                )
            )

    def refusal(self, ctx: CallContext, outcome: Outcome) -> None:
        """Close a refused call: its outcome if its intent was recorded, else one refusal record."""
        if ctx.intent_written:
            self.outcome(ctx, outcome)
            return
        ctx.closed = True
        if not self.enabled:
            return
        record = self.build(ctx, "event", event_type="refusal", outcome=outcome)
        if ctx.principal is None:
            # Unauthenticated refusals are summarised so that a flood cannot fill the disk.
            # Keyed by why it was refused (missing token, invalid_token, ...) when the pipeline says so.
            summarized = self.summarizer.observe(record, now=ctx.timestamp, reason=ctx.refusal_reason)
            for item in summarized:
                self.sink.append_nowait(item)
            return
        self.sink.append_nowait(record)

    def build(
        self, ctx: CallContext, phase: str, *, event_type: str | None = None, outcome: Outcome | None = None
    ) -> AuditRecord:
        """The intent record (no `outcome`) or a refusal record of `ctx` (pure but for the event id)."""
        msg = ctx.message
        principal = ctx.principal
        decision = ctx.decision
        arguments = msg.arguments if msg is not None else None
        stored = None
        if self.store_arguments and arguments is not None:
            stored = arguments_json(arguments, self.redact_keys)
        if decision is not None:
            verdict = decision.kind
        elif outcome is not None and outcome.http_status >= 400:
            verdict = "deny"
        else:
            verdict = None
        event_id = ctx.event_id
        if event_id is None:
            event_id = ctx.event_id = new_event_id()  # shared by the intent and outcome records
            log_ids.event_id.set(event_id)  # and by this request's log lines
        return AuditRecord(
            phase=phase,  # type: ignore[arg-type]
            timestamp=ctx.timestamp,
            event_id=event_id,
            agent_id=principal.agent_id if principal else None,
            delegating_user=principal.delegating_user if principal else None,
            session_id=ctx.session_id,
            mcp_server=ctx.server,
            method=msg.method if msg else None,
            tool=msg.name if msg else None,
            scope_granted=tuple(sorted(principal.scopes)) if principal else (),
            scopes_required=decision.scopes_required if decision else (),
            token_ttl=principal.ttl(ctx.timestamp) if principal else None,
            token_id=principal.token_id if principal else ctx.token_reference,
            request_context=msg.request_context if msg else None,
            decision=verdict,
            policy_rule=decision.rule if decision else None,
            policy_version=self.policy_version,
            outcome=outcome.kind if outcome is not None else None,
            http_status=outcome.http_status if outcome is not None else None,
            latency_ms=None if outcome is None else round((time.perf_counter() - ctx.started) * 1000, 3),
            arguments_sha256=self._digest(ctx, arguments),
            arguments=stored,
            client_address=ctx.client_address,
            upstream_identity=ctx.upstream_identity,
            event_type=event_type,
            detail=_detail(ctx, outcome),
            shadow_decision=decision.shadow if decision else None,
            approval=ctx.approval,
        )

    @staticmethod
    def _digest(ctx: CallContext, arguments: Any) -> str | None:
        if arguments is None:
            return None
        if ctx.arguments_sha256 is None:
            ctx.arguments_sha256 = arguments_digest(arguments)
        return ctx.arguments_sha256


def _detail(ctx: CallContext, outcome: Outcome | None) -> str | None:
    error = outcome.error if outcome is not None and outcome.error else ctx.refusal_reason
    return json.dumps({"error": error}) if error else None
