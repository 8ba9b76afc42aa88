"""The request pipeline for `/{server}/mcp`, top to bottom.

guard → authenticate → classify / era → session → authorize → record intent → exchange (relay) →
record outcome. Each step is a call into the module that owns its concern; this module only orders them
and turns refusals into answers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from mcp_gateway.auth.bearer import bearer_credential, checked_token
from mcp_gateway.auth.principal import Principal
from mcp_gateway.auth.verifier import TokenVerifier
from mcp_gateway.config import GatewayConfig
from mcp_gateway.errors import (
    AuditUnavailable,
    AuthError,
    HTTPError,
    InsufficientScope,
    MessageRefused,
    ProtocolRejected,
    RateLimited,
    SessionNotFound,
    TransportRejected,
    UpstreamSessionGone,
)
from mcp_gateway.limits import LimitStore
from mcp_gateway.observe.tracing import step
from mcp_gateway.policy.ratelimit import rate_limit_keys
from mcp_gateway.proxy import continuations, jsonrpc, server_request_ids, shapes, tool_gate
from mcp_gateway.proxy import era as eras
from mcp_gateway.proxy.approval_gate import ApprovalGate
from mcp_gateway.proxy.context import ABORTED, CallContext, Outcome
from mcp_gateway.proxy.decision_input import decision_input
from mcp_gateway.proxy.exchange import Leg, UpstreamExchange, credential_request, upstream_headers
from mcp_gateway.proxy.recording import CallRecorder, token_reference
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.route import Route
from mcp_gateway.proxy.session_gate import SessionGate
from mcp_gateway.proxy.sessions import EventIds, SessionClaims
from mcp_gateway.proxy.streaming import RelayOptions
from mcp_gateway.transport.asgi import Headers, Receive, Scope, Send, header, respond
from mcp_gateway.transport.guard import OriginGuard
from mcp_gateway.transport.limits import check_header_size, read_body
from mcp_gateway.transport.media import check_post_media_types, check_stream_accept

# Methods whose calls leave an intent and an outcome record.
AUDITED_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
DENIED = Outcome("denied", 200)
_DENIED = {"tools/call": "Tool", "resources/read": "Resource", "prompts/get": "Prompt"}


class McpEndpoint:
    """Serves POST, GET and DELETE on every `/{server}/mcp` route."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        verifier: TokenVerifier,
        recorder: CallRecorder,
        sessions: SessionGate,
        limits: LimitStore,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.recorder = recorder
        self.sessions = sessions
        self.limits = limits
        self.clock = clock
        self.monotonic = monotonic  # token buckets need a clock that never steps back
        self.guard = OriginGuard(config)
        self.exchange = UpstreamExchange(config, recorder, clock, sessions.sealer)
        self.approvals = ApprovalGate(recorder, clock)  # issue 16: calls held for a person's approval
        self._max_token = config.auth.max_token_bytes if config.auth else 8192
        # A verifier with a verified-token cache answers a repeated token without a coroutine.
        self._cached: Callable[..., Principal | None] | None = getattr(verifier, "cached", None)

    async def __call__(self, route: Route, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve one request; return the HTTP status it ended with (499: the client left before the end)."""
        ctx = self.recorder.begin(route, scope, self.clock())
        try:
            headers: Headers = scope["headers"]
            self._guard(headers)
            method = scope["method"]
            if method == "POST":
                outcome = await self._post(route, ctx, headers, receive, send)
            elif method in ("GET", "DELETE"):
                outcome = await self._stream(route, ctx, method, headers, receive, send)
            else:
                raise TransportRejected("Method Not Allowed", status_code=405, headers=[("allow", "GET, POST, DELETE")])
        except HTTPError as exc:
            outcome = await self._refuse(route, ctx, exc, send)
        return outcome.http_status

    def _guard(self, headers: Headers) -> None:
        check_header_size(headers, self.config.max_header_bytes)
        self.guard.check(header(headers, b"host"), header(headers, b"origin"))

    # -- POST -------------------------------------------------------------------------------------

    async def _post(self, route: Route, ctx: CallContext, headers: Headers, receive: Receive, send: Send) -> Outcome:
        check_post_media_types(headers)
        body = await read_body(receive, headers, self.config.max_body_bytes)
        msg = ctx.message = jsonrpc.classify(jsonrpc.parse_json(body))
        era = eras.post_era(headers, msg)
        with step("authenticate", ctx):
            principal = await self._authenticate(route, headers, ctx)
        eras.check_request(headers, msg, era)
        shapes.judge_shape(ctx, era)  # a governed method without an id is refused, never forwarded
        jsonrpc.require_target(msg)
        initialize = msg.method == "initialize" and not era.modern
        claims = None if era.modern or initialize else await self._session(route, headers, principal, ctx)
        if msg.kind == "request":
            refused = await self._authorize(route, ctx, principal, era, claims, send)
            if refused is not None:
                return refused
            # MCP 2026-07-28: a requestState opens only for the principal and route it was relayed to
            # (checked before anyone is asked to approve the call).
            body = continuations.inbound_body(ctx, body, self.exchange.continuations.bound(route.name, principal))
            held = await self.approvals.hold(ctx, receive, send)  # forwarded only once a person approves
            if isinstance(held, Outcome):
                return held
            send, ctx.approval = held
        if claims is not None and msg.kind == "response":  # it answers only a request relayed in this session
            body = server_request_ids.inbound_response(ctx, body, self.exchange.server_request_ids.bound(claims))
        audited = msg.method in AUDITED_METHODS
        if audited:
            # Fail closed: the intent record is durable before anything is forwarded (AuditUnavailable → 503).
            await self.recorder.intent(ctx)
        if initialize:
            body = eras.negotiable_initialize(body, msg)
        leg = Leg("POST", upstream_headers(headers, claims, content_type=True), body, credential_request(ctx))
        outcome = await self._forward(ctx, leg, era, claims, initialize, receive, send)
        if audited:
            self.recorder.outcome(ctx, outcome)
        return outcome

    async def _authorize(
        self,
        route: Route,
        ctx: CallContext,
        principal: Principal,
        era: eras.Era,
        claims: SessionClaims | None,
        send: Send,
    ) -> Outcome | None:
        """Judge a request: None when it may go on, else the outcome of the refusal already answered."""
        msg = ctx.message
        assert msg is not None and msg.method is not None
        with step("decide", ctx):
            decision = ctx.decision = route.decider.decide(decision_input(route, ctx, principal, era))
        if decision.kind == "step_up":
            # MCP authorization §Scope Challenge Handling: 403 insufficient_scope naming the scopes
            # the current operation needs, sent before any byte of a response is committed.
            raise InsufficientScope(
                "The token lacks a scope this operation needs",
                resource_metadata=route.metadata_url,
                scopes=decision.scopes_required,
            )
        if decision.kind == "deny":
            if decision.rule == "unknown_method":
                # The gateway serves no method the policy does not know, whatever the upstream has.
                raise eras.method_not_found(msg, era)
            return await self._deny(ctx, send, decision.reason)
        # DESIGN: a tool must exist in the verified catalogue with its pinned definition (and schema).
        refusal = await tool_gate.judge_tool_call(ctx, era, claims, self.monotonic())
        if refusal is not None:
            ctx.decision = tool_gate.refusal_decision(refusal, decision)
            return await self._answer(ctx, send, refusal.body, Outcome(refusal.kind, refusal.status))
        await self._rate_limit(route, principal, ctx)
        return None

    async def _forward(
        self,
        ctx: CallContext,
        leg: Leg,
        era: eras.Era,
        claims: SessionClaims | None,
        initialize: bool,
        receive: Receive,
        send: Send,
    ) -> Outcome:
        msg, principal = ctx.message, ctx.principal
        assert msg is not None and principal is not None
        judge, options = self.exchange.relay_plan(ctx.route, principal, era, claims, self._event_ids(claims))
        state = StreamState(request_id=msg.id if msg.kind == "request" else None, request_method=msg.method)
        creation = await self.sessions.initialize(ctx.route.name, principal) if initialize else None
        try:
            if creation is not None:
                judge.initialize_versions = eras.HANDSHAKE_VERSIONS

                async def seal(upstream_id: str) -> str:
                    sealed = await creation.seal(upstream_id)
                    options.event_ids = creation.event_ids  # this stream's ids belong to the new session
                    assert creation.claims is not None
                    judge.server_request_ids = self.exchange.server_request_ids.bound(creation.claims)
                    return sealed

                options.seal = seal
            return await self._run(ctx, leg, (judge, state, options), claims, receive, send)
        except HTTPError:
            raise  # the refusal that answers it closes the audit record with its status
        except BaseException:
            if ctx.outcome_pending():
                self.recorder.outcome(ctx, ABORTED)  # cancelled (a shutdown) or failed: still closed
            raise
        finally:
            if creation is not None:
                await creation.settle(succeeded=state.outcome == "ok")

    async def _run(
        self,
        ctx: CallContext,
        leg: Leg,
        relay: tuple[UpstreamMessageJudge, StreamState, RelayOptions],
        claims: SessionClaims | None,
        receive: Receive,
        send: Send,
    ) -> Outcome:
        """The exchange, and what an upstream's 404 means for the session it was asked about."""
        route, principal = ctx.route, ctx.principal
        assert principal is not None
        gone = False  # also when the exchange is cancelled (a drain), which the finally below must let through
        try:
            outcome = await self.exchange.run(route, leg, relay, ctx, receive, send)
        except UpstreamSessionGone:
            gone = True
            raise
        else:
            gone = outcome.http_status == 404
        finally:
            if claims is not None and gone:
                # MCP transports §Session Management: the upstream answers 404 for a session it ended; the
                # gateway relays that (the client re-initializes) and stops counting it against its principal.
                await self.sessions.closed(route.name, claims, principal)
        return outcome

    # -- GET / DELETE -----------------------------------------------------------------------------

    async def _stream(
        self, route: Route, ctx: CallContext, method: str, headers: Headers, receive: Receive, send: Send
    ) -> Outcome:
        era = eras.stream_era(headers)
        if method == "GET":
            check_stream_accept(headers)
        with step("authenticate", ctx):
            principal = await self._authenticate(route, headers, ctx)
        claims = await self._session(route, headers, principal, ctx)
        event_ids = self.sessions.event_ids(claims)
        leg = Leg(method, upstream_headers(headers, claims, content_type=False), b"", credential_request(ctx))
        last_event_id = header(headers, b"last-event-id") if method == "GET" else None
        if last_event_id is not None:
            upstream_event_id = event_ids.untag(last_event_id.strip(b" \t"))
            if upstream_event_id is None:
                # MCP transports §Resumability: never replay another stream's messages, let alone
                # another session's: only an id this session was given resumes it.
                raise ProtocolRejected(
                    "Bad Request: Last-Event-ID was not issued in this session", jsonrpc_code=jsonrpc.INVALID_REQUEST
                )
            leg.headers.append((b"last-event-id", upstream_event_id))
        judge, options = self.exchange.relay_plan(route, principal, era, claims, event_ids)
        # A GET with Last-Event-ID replays a POST stream, whose response may be on it.
        state = StreamState(resumed=last_event_id is not None)
        outcome = await self._run(ctx, leg, (judge, state, options), claims, receive, send)
        if method == "DELETE" and 200 <= outcome.http_status < 300:
            # Ended by the client: its place under max_sessions_per_principal is free again.
            await self.sessions.closed(route.name, claims, principal)
        return outcome

    # -- steps ------------------------------------------------------------------------------------

    async def _authenticate(self, route: Route, headers: Headers, ctx: CallContext) -> Principal:
        cached = self._cached
        try:
            raw = bearer_credential(headers, max_token_bytes=self._max_token)
            if cached is not None:
                principal = cached(raw, resource=route.resource_uri)
                if principal is not None:
                    # Only a token that passed `checked_token` below and then verified is ever cached
                    # (this is the verifier's only caller), so these exact bytes have passed it before.
                    ctx.principal, ctx.bearer_token = principal, raw
                    return principal
            token = checked_token(raw)
        except AuthError as exc:
            ctx.refusal_reason = exc.error_code or "missing_token"
            raise
        try:
            principal = await self.verifier.verify(token, resource=route.resource_uri)
        except HTTPError as exc:
            # SECURITY.md: the refusal's record names the token by its hash, never by its value, and
            # says why it was refused, so that a flood of forged tokens is not folded into missing ones.
            ctx.token_reference = token_reference(token)
            ctx.refusal_reason = (
                exc.error_code if isinstance(exc, AuthError) and exc.error_code else "token_unverifiable"
            )
            raise
        ctx.principal, ctx.bearer_token = principal, raw  # raw: the RFC 8693 subject_token, never sent upstream
        return principal

    async def _session(self, route: Route, headers: Headers, principal: Principal, ctx: CallContext) -> SessionClaims:
        sealed = header(headers, b"mcp-session-id")
        if sealed is None:
            # MCP transports §Session Management: a request without a required session id → 400.
            raise ProtocolRejected("Bad Request: Mcp-Session-Id header is required", jsonrpc_code=-32600)
        presented = sealed.decode("latin-1")
        try:
            claims = await self.sessions.open(route.name, presented, principal)
        except SessionNotFound:
            # SECURITY.md: a refused id is client text, not an identifier the gateway issued: the record
            # names it by its hash, so no control character or bidi override reaches the audit.
            ctx.session_id = "sha256:" + hashlib.sha256(sealed).hexdigest()
            raise
        ctx.session_id = presented  # it opened, so it is the one canonical spelling of a sealed id
        return claims

    def _event_ids(self, claims: SessionClaims | None) -> EventIds | None:
        return None if claims is None else self.sessions.event_ids(claims)

    async def _rate_limit(self, route: Route, principal: Principal, ctx: CallContext) -> None:
        msg = ctx.message
        assert msg is not None
        keys = rate_limit_keys(
            route.rate_limits,
            agent_id=principal.agent_id,
            tool=msg.name if msg.method == "tools/call" else None,
            user=principal.delegating_user,
            server=route.name,
        )
        if not keys:
            return
        retry_after = await self.limits.take(keys, self.monotonic())
        if retry_after is not None:
            raise RateLimited("Too Many Requests: rate limit exceeded for this agent", retry_after=retry_after)

    # -- refusals ---------------------------------------------------------------------------------

    async def _deny(self, ctx: CallContext, send: Send, text: str | None = None) -> Outcome:
        # Deny by default, without revealing whether the target exists upstream.
        msg = ctx.message
        assert msg is not None
        text = text or f"{_DENIED.get(msg.method or '', 'Method')} {msg.name or msg.method!r} is not permitted"
        return await self._answer(ctx, send, jsonrpc.error_body(msg.id, jsonrpc.INVALID_PARAMS, text))

    async def _answer(self, ctx: CallContext, send: Send, body: bytes, outcome: Outcome = DENIED) -> Outcome:
        await respond(send, outcome.http_status, body)
        if ctx.message is not None and ctx.message.method in AUDITED_METHODS:
            self.recorder.refusal(ctx, outcome)
        return outcome

    async def _refuse(self, route: Route, ctx: CallContext, exc: HTTPError, send: Send) -> Outcome:
        extra = exc.headers
        if isinstance(exc, AuthError):
            exc.with_challenge(resource_metadata=route.metadata_url, scopes=self._challenge_scopes(route, ctx))
            extra = (("www-authenticate", exc.www_authenticate()),)
        elif isinstance(exc, AuditUnavailable):
            # Fixed wording: the store's own error text (paths, SQLite messages) stays in our logs.
            exc.message = "Service Unavailable: the audit log cannot record this call; nothing was forwarded"
            extra = (("retry-after", "5"),)
        outcome = Outcome(exc.outcome, exc.status_code)
        if exc.status_code == 499:
            return outcome  # the client is gone; nobody to answer
        msg = ctx.message
        audited = msg is not None and msg.method in AUDITED_METHODS
        if isinstance(exc, SessionNotFound | AuthError | MessageRefused) or exc.status_code == 429 or audited:
            # SECURITY.md: every refusal at an MCP endpoint leaves an audit record.
            self.recorder.refusal(ctx, outcome)
        request_id = msg.id if msg is not None and msg.kind == "request" else None
        body = jsonrpc.error_body(request_id, exc.jsonrpc_code, exc.message, exc.data)
        await respond(send, exc.status_code, body, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra])
        return outcome

    def _challenge_scopes(self, route: Route, ctx: CallContext) -> tuple[str, ...]:
        # DESIGN: a 401 names the scopes the requested operation needs when the body names one,
        # else the server's default scopes.
        msg = ctx.message
        if msg is not None and msg.kind == "request" and msg.method is not None:
            decision = route.policy.decide_request(frozenset(), msg.method, msg.body.get("params"))
            if decision.scopes_required:
                return decision.scopes_required
        return tuple(route.entry.default_scopes or ())
