"""The per-request pipeline for `/{server}/mcp`: guard, authenticate, classify, authorize, audit, forward."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request, find_duplicated_routing_header
from mcp_types.methods import CLIENT_REQUESTS

from mcp_gateway.audit.sink import AuditSink
from mcp_gateway.auth.bearer import bearer_credential, checked_token
from mcp_gateway.auth.principal import Principal
from mcp_gateway.auth.verifier import TokenVerifier
from mcp_gateway.config import GatewayConfig
from mcp_gateway.errors import (
    AuditUnavailable,
    AuthError,
    HTTPError,
    InsufficientScope,
    ProtocolRejected,
    RateLimited,
    SessionNotFound,
    TransportRejected,
    UpstreamError,
    UpstreamIdentityError,
    UpstreamTimeout,
)
from mcp_gateway.policy.decision import Decision
from mcp_gateway.policy.ratelimit import RateLimiter, rate_limit_keys
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.asgi import Headers, Receive, Scope, Send, header, read_body, respond
from mcp_gateway.proxy.recording import CallRecorder, token_reference
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.route import Route
from mcp_gateway.proxy.sessions import SessionClaims, SessionLedger, SessionSealer, principal_fingerprint
from mcp_gateway.proxy.streaming import DisconnectWatch, RelayOptions, relay_response
from mcp_gateway.transport.guard import OriginGuard

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18")
SUPPORTED_VERSIONS = (*MODERN_VERSIONS, *HANDSHAKE_VERSIONS)
AUDITED_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
_FINGERPRINT_CACHE_SIZE = 4096

# Request headers relayed upstream: an allowlist, so hop-by-hop headers, cookies, the client's
# Authorization and forwarding headers are never passed on (MCP authorization §Token Passthrough).
_RELAYED = frozenset({b"accept", b"mcp-protocol-version", b"mcp-method", b"mcp-name", b"traceparent", b"tracestate"})
_PARAM_PREFIX = b"mcp-param-"


# Which spec methods exist in which revision, from the SDK's own method table.
_MODERN_REQUESTS = frozenset((method, version) for method, version in CLIENT_REQUESTS if version in MODERN_VERSIONS)
_SPEC_REQUESTS = frozenset(method for method, _ in CLIENT_REQUESTS)


def _unsupported_version(requested: str) -> ProtocolRejected:
    # MCP 2026-07-28: data.supported lists the versions a request may name without a handshake, as
    # server/discover's supportedVersions does; handshake versions are negotiated by initialize.
    return ProtocolRejected(
        f"Unsupported protocol version {requested!r}; supported: {', '.join(MODERN_VERSIONS)}, "
        f"or {' and '.join(HANDSHAKE_VERSIONS)} after initialize",
        jsonrpc_code=jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
        data={"supported": list(MODERN_VERSIONS), "requested": requested},
    )


def _negotiable_initialize(body: bytes, msg: jsonrpc.ClientMessage) -> bytes:
    """The initialize to forward: the client's, unless it asks for a version this gateway does not serve.

    MCP lifecycle §Version Negotiation: "If the server supports the requested protocol version, it MUST
    respond with the same version. Otherwise, the server MUST respond with another protocol version it
    supports." The gateway is the server here, so it asks the upstream for its own latest handshake version
    instead; the client then sees that version and decides, as the spec says, whether it can go on. Left as
    it was, the upstream could settle on a version every later request would be refused for (400).
    """
    params = msg.body.get("params")
    if not isinstance(params, dict) or params.get("protocolVersion") in HANDSHAKE_VERSIONS:
        return body
    if not isinstance(params.get("protocolVersion"), str):
        return body  # not an initialize the upstream can accept either way: let it answer -32602
    return jsonrpc.dumps({**msg.body, "params": {**params, "protocolVersion": HANDSHAKE_VERSIONS[0]}})


def _method_not_found(msg: jsonrpc.ClientMessage, era: Era) -> ProtocolRejected:
    # JSON-RPC 2.0 §5.1: -32601; MCP 2026-07-28 maps it to HTTP 404 (the handshake eras answer 200).
    return ProtocolRejected(
        "Method not found",
        jsonrpc_code=jsonrpc.METHOD_NOT_FOUND,
        status_code=404 if era.modern else 200,
        data=msg.method,
    )


@dataclass(frozen=True, slots=True)
class Era:
    modern: bool
    version: str | None


class McpEndpoint:
    """Serves POST, GET and DELETE on every `/{server}/mcp` route."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        verifier: TokenVerifier,
        audit: AuditSink,
        recorder: CallRecorder,
        sealer: SessionSealer,
        rate_limiter: RateLimiter,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
        sessions: SessionLedger | None = None,
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.audit = audit
        self.recorder = recorder
        self.sealer = sealer
        self.sessions = sessions or SessionLedger(config.max_sessions_per_principal, config.session_max_age_seconds)
        self.rate_limiter = rate_limiter
        self.clock = clock
        self.monotonic = monotonic  # token buckets need a clock that never steps back
        self.guard = OriginGuard(config)
        self._max_token = config.auth.max_token_bytes if config.auth else 8192
        # A verifier with a verified-token cache answers a repeated token without a coroutine.
        self._cached: Callable[..., Principal | None] | None = getattr(verifier, "cached", None)
        self._fingerprints: dict[tuple[str, str | None, str], str] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, route: Route, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve one request; return the HTTP status it ended with (499: the client left before the end)."""
        headers: Headers = scope["headers"]
        ctx = self.recorder.begin(route, scope, self.clock())
        try:
            if sum(map(len, chain.from_iterable(headers))) > self.config.max_header_bytes:
                # RFC 6585 §5: 431, refused before any token is parsed or any key looked up.
                raise TransportRejected("Request Header Fields Too Large", status_code=431)
            self.guard.check(header(headers, b"host"), header(headers, b"origin"))
            method = scope["method"]
            if method == "POST":
                await self._post(route, ctx, headers, receive, send)
            elif method in ("GET", "DELETE"):
                await self._get_or_delete(route, ctx, method, headers, receive, send)
            else:
                raise TransportRejected("Method Not Allowed", status_code=405, headers=[("allow", "GET, POST, DELETE")])
        except AuthError as exc:
            exc.with_challenge(resource_metadata=route.metadata_url, scopes=self._challenge_scopes(route, ctx))
            await self._refuse(send, exc, ctx, [("www-authenticate", exc.www_authenticate())])
        except AuditUnavailable as exc:
            # Fixed wording: the store's own error text (paths, SQLite messages) stays in our logs.
            exc.message = "Service Unavailable: the audit log cannot record this call; nothing was forwarded"
            await self._refuse(send, exc, ctx, [("retry-after", "5")])
        except HTTPError as exc:
            await self._refuse(send, exc, ctx, exc.headers)
        return ctx.http_status or 0

    # -- POST -------------------------------------------------------------------------------------

    async def _post(self, route: Route, ctx: Any, headers: Headers, receive: Receive, send: Send) -> None:
        content_type = header(headers, b"content-type") or b""
        if not content_type.split(b";", 1)[0].strip().lower() == b"application/json":
            raise TransportRejected("Unsupported Media Type: POST bodies must be application/json", status_code=415)
        accept = (header(headers, b"accept") or b"").lower()
        if b"application/json" not in accept and b"*/*" not in accept and b"application/*" not in accept:
            # MCP transports §Sending Messages: the client MUST accept application/json and text/event-stream.
            raise TransportRejected("Not Acceptable: Accept must include application/json", status_code=406)
        body = await read_body(receive, headers, self.config.max_body_bytes)
        value = jsonrpc.parse_json(body)
        msg = jsonrpc.classify(value)
        ctx.message = msg
        era = self._era(headers, msg)
        principal = await self._authenticate(route, headers, ctx)
        if era.modern:
            self._check_modern(headers, msg)
            removed = msg.method in _SPEC_REQUESTS and (msg.method, era.version) not in _MODERN_REQUESTS
            if msg.kind == "request" and removed:
                # MCP 2026-07-28: a method this revision removed (initialize, ping, logging/setLevel,
                # resources/subscribe, ...) is not found: 404 with -32601.
                raise _method_not_found(msg, era)
        jsonrpc.require_target(msg)
        claims = self._session(route, headers, principal, ctx, era, initialize=msg.method == "initialize")
        if msg.kind == "request":
            decision = route.policy.decide_request(principal.scopes, msg.method or "", msg.body.get("params"))
            ctx.decision = decision
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
                    raise _method_not_found(msg, era)
                await self._deny(send, msg, ctx)
                return
            if msg.method == "tools/call" and route.catalogue is not None and msg.name is not None:
                why = route.catalogue.quarantined(msg.name)
                if why is not None:
                    # DESIGN: a tool must exist in the verified catalogue with its pinned definition.
                    ctx.decision = Decision("deny", decision.scopes_required, "tools_sha256")
                    await self._deny(send, msg, ctx, f"Tool {msg.name!r} is quarantined: {why}")
                    return
            self._rate_limit(route, principal, msg, ctx)
        if msg.method in AUDITED_METHODS:
            # Fail closed: the intent record is durable before anything is forwarded (AuditUnavailable → 503).
            await self.recorder.intent(ctx)
        await self._forward_post(route, ctx, headers, body, msg, era, claims, principal, receive, send)

    def _era(self, headers: Headers, msg: jsonrpc.ClientMessage) -> Era:
        raw = header(headers, b"mcp-protocol-version")
        version = raw.decode("latin-1") if raw is not None else None
        if version in MODERN_VERSIONS:
            return Era(True, version)
        if version in HANDSHAKE_VERSIONS:
            return Era(False, version)
        if version is None and msg.method == "initialize":
            return Era(False, None)  # the handshake negotiates the version in the body
        # MCP transports §Protocol Version Header: an invalid or unsupported version → 400;
        # an absent header means 2025-03-26, which this gateway does not serve.
        raise _unsupported_version(version if version is not None else "2025-03-26")

    def _check_modern(self, headers: Headers, msg: jsonrpc.ClientMessage) -> None:
        # MCP 2026-07-28 transports: Mcp-Method / Mcp-Name must match the body (400, -32020); a
        # duplicated routing header would let two readers disagree, so it is refused too.
        # RFC 9110 §5.5: a field value excludes leading and trailing whitespace (httptools keeps it).
        text_headers = [
            (k.decode("latin-1"), v.decode("latin-1").strip(" \t")) for k, v in headers if k.startswith(b"mcp-")
        ]
        duplicated = find_duplicated_routing_header(text_headers)
        if duplicated is not None:
            raise ProtocolRejected(f"{duplicated} header appears more than once", jsonrpc_code=jsonrpc.HEADER_MISMATCH)
        if msg.kind != "request":
            method = header(headers, b"mcp-method")
            if msg.method is not None and method is not None and method.decode("latin-1") != msg.method:
                raise ProtocolRejected(
                    "mcp-method header does not match the body", jsonrpc_code=jsonrpc.HEADER_MISMATCH
                )
            return
        verdict = classify_inbound_request(
            msg.body, headers=dict(text_headers), supported_modern_versions=MODERN_VERSIONS
        )
        if isinstance(verdict, InboundLadderRejection):
            raise ProtocolRejected(verdict.message, jsonrpc_code=verdict.code, data=verdict.data)

    async def _authenticate(self, route: Route, headers: Headers, ctx: Any) -> Principal:
        cached = self._cached
        try:
            raw = bearer_credential(headers, max_token_bytes=self._max_token)
            if cached is not None:
                principal = cached(raw, resource=route.resource_uri)
                if principal is not None:
                    # Only a token that passed `checked_token` below and then verified is ever cached
                    # (this is the verifier's only caller), so these exact bytes have passed it before.
                    ctx.principal = principal
                    return principal
            token = checked_token(raw)
        except AuthError as exc:
            ctx.error = exc.error_code or "missing_token"
            raise
        try:
            principal = await self.verifier.verify(token, resource=route.resource_uri)
        except HTTPError as exc:
            # SECURITY.md: the refusal's record names the token by its hash, never by its value, and
            # says why it was refused, so that a flood of forged tokens is not folded into missing ones.
            ctx.token_reference = token_reference(token)
            ctx.error = exc.error_code if isinstance(exc, AuthError) and exc.error_code else "token_unverifiable"
            raise
        ctx.principal = principal
        return principal

    def _challenge_scopes(self, route: Route, ctx: Any) -> tuple[str, ...]:
        # DESIGN: a 401 names the scopes the requested operation needs when the body names one,
        # else the server's default scopes.
        msg = ctx.message
        if msg is not None and msg.kind == "request" and msg.method is not None:
            decision: Decision = route.policy.decide_request(frozenset(), msg.method, msg.body.get("params"))
            if decision.scopes_required:
                return decision.scopes_required
        return tuple(route.entry.default_scopes or ())

    def _session(
        self, route: Route, headers: Headers, principal: Principal, ctx: Any, era: Era, *, initialize: bool
    ) -> SessionClaims | None:
        if era.modern or initialize:
            return None  # 2026-07-28 has no sessions; initialize creates one
        sealed = header(headers, b"mcp-session-id")
        if sealed is None:
            # MCP transports §Session Management: a request without a required session id → 400.
            raise ProtocolRejected("Bad Request: Mcp-Session-Id header is required", jsonrpc_code=-32600)
        ctx.session_id = sealed.decode("latin-1")
        fingerprint = self._fingerprint(principal)
        claims = self.sealer.open(ctx.session_id, server=route.name, principal=fingerprint)
        if self.sessions.expired(claims, self.clock()):
            # session_max_age_seconds: past it the session is over on every replica (the id carries its
            # creation time); 404 tells the client to initialize a new one (MCP transports §Session Management).
            self.sessions.closed(fingerprint, route.name, claims.upstream_session_id)
            raise SessionNotFound("Session not found: it expired (session_max_age_seconds); initialize a new one")
        return claims

    def _fingerprint(self, principal: Principal) -> str:
        # `binding_key()` is JSON of exactly these three fields, so they key its fingerprint.
        key = (principal.issuer, principal.subject, principal.agent_id)
        fingerprint = self._fingerprints.get(key)
        if fingerprint is None:
            fingerprint = principal_fingerprint(principal.binding_key())
            if len(self._fingerprints) >= _FINGERPRINT_CACHE_SIZE:
                self._fingerprints.clear()
            self._fingerprints[key] = fingerprint
        return fingerprint

    async def _deny(self, send: Send, msg: jsonrpc.ClientMessage, ctx: Any, text: str | None = None) -> None:
        # Deny by default, without revealing whether the target exists upstream.
        what = {"tools/call": "Tool", "resources/read": "Resource", "prompts/get": "Prompt"}.get(
            msg.method or "", "Method"
        )
        text = text or f"{what} {msg.name or msg.method!r} is not permitted"
        body = jsonrpc.error_body(msg.id, jsonrpc.INVALID_PARAMS, text)
        ctx.http_status = 200
        ctx.outcome = "denied"
        await respond(send, 200, body)
        if msg.method in AUDITED_METHODS:
            self.recorder.refusal(ctx)

    def _rate_limit(self, route: Route, principal: Principal, msg: jsonrpc.ClientMessage, ctx: Any) -> None:
        keys = rate_limit_keys(
            route.rate_limits,
            agent_id=principal.agent_id,
            tool=msg.name if msg.method == "tools/call" else None,
            user=principal.delegating_user,
            server=route.name,
        )
        if not keys:
            return
        retry_after = self.rate_limiter.check(keys, self.monotonic())
        if retry_after is not None:
            raise RateLimited("Too Many Requests: rate limit exceeded for this agent", retry_after=retry_after)

    async def _forward_post(
        self,
        route: Route,
        ctx: Any,
        headers: Headers,
        body: bytes,
        msg: jsonrpc.ClientMessage,
        era: Era,
        claims: SessionClaims | None,
        principal: Principal,
        receive: Receive,
        send: Send,
    ) -> None:
        upstream_headers = self._upstream_headers(route, headers, claims, content_type=True)
        state = StreamState(request_id=msg.id if msg.kind == "request" else None, request_method=msg.method)
        judge = UpstreamMessageJudge(
            route.policy,
            principal.scopes,
            governs_server_requests=not era.modern,
            secret=route.credential_secret,
            catalogue=route.catalogue,
        )
        options = RelayOptions(
            max_event_bytes=self.config.max_event_bytes,
            max_body_bytes=self.config.max_body_bytes,
            session_sent=claims is not None and bool(claims.upstream_session_id),
            seal=None,
            resumable=not era.modern,
            reject_server_request=None if era.modern else self._rejecter(route, claims, era),
            event_ids=None if claims is None else self.sealer.event_ids(claims),
        )
        fingerprint = ""  # the principal's, for an initialize only: no other request needs it here
        reserved = False
        opened: str | None = None  # the upstream session an initialize created
        if msg.method == "initialize" and not era.modern:
            fingerprint = self._fingerprint(principal)
            body = _negotiable_initialize(body, msg)
            judge.initialize_versions = HANDSHAKE_VERSIONS
            # SECURITY.md: a cap on sessions per principal, enforced before the upstream creates one.
            self.sessions.reserve(fingerprint, self.clock())
            reserved = True

            def seal(upstream_id: str) -> str:
                nonlocal reserved, opened
                created = SessionClaims(route.name, upstream_id, fingerprint, int(self.clock()))
                options.event_ids = self.sealer.event_ids(created)  # this stream's ids belong to the new session
                self.sessions.opened(fingerprint, route.name, upstream_id, created.created)
                reserved, opened = False, upstream_id
                return self.sealer.seal(created)

            options.seal = seal
        audited = msg.method in AUDITED_METHODS
        try:
            await self._exchange(route, "POST", upstream_headers, body, judge, state, ctx, options, receive, send)
        except HTTPError:
            raise  # the refusal that answers it closes the audit record with its status
        except BaseException:
            if audited and ctx.outcome_pending():
                ctx.outcome = ctx.outcome or "aborted"
                self.recorder.outcome(ctx)
            raise
        finally:
            if reserved:
                self.sessions.cancel(fingerprint)  # no session came of it
            elif opened is not None and state.outcome != "ok":
                self.sessions.closed(fingerprint, route.name, opened)  # an initialize that failed opens nothing usable
            self._forget_if_gone(route, claims, principal, ctx)
        if audited and ctx.outcome_pending():
            self.recorder.outcome(ctx)

    def _forget_if_gone(self, route: Route, claims: SessionClaims | None, principal: Principal, ctx: Any) -> None:
        # MCP transports §Session Management: the upstream answers 404 for a session it ended; the gateway
        # relays that (the client re-initializes) and stops counting the session against its principal.
        if claims is not None and ctx.http_status == 404:
            self.sessions.closed(self._fingerprint(principal), route.name, claims.upstream_session_id)

    async def _exchange(
        self,
        route: Route,
        method: str,
        upstream_headers: list[tuple[bytes, bytes]],
        body: bytes,
        judge: UpstreamMessageJudge,
        state: StreamState,
        ctx: Any,
        options: RelayOptions,
        receive: Receive,
        send: Send,
    ) -> None:
        """One upstream request and its relayed response, cut short if the client goes away."""
        async with DisconnectWatch(receive, send) as watch:
            try:
                response = await route.pool.request(method, route.upstream_path, upstream_headers, body)
            except UpstreamError as exc:
                await self._upstream_failed(watch.send, ctx, exc, state.request_id)
            else:
                await relay_response(response, send=watch.send, judge=judge, state=state, ctx=ctx, options=options)
        if watch.disconnected:
            ctx.outcome = "aborted"
            ctx.http_status = 499
        if route.catalogue is not None and route.catalogue.pending:
            for check in route.catalogue.take_pending():
                # Audited with both hashes, once per distinct presented definition.
                self.recorder.security_event(
                    route,
                    "tool_quarantined",
                    {
                        "tool": check.name,
                        "status": check.status,
                        "pinned": check.expected,
                        "presented": check.presented,
                    },
                    self.clock(),
                )

    def _upstream_headers(
        self, route: Route, headers: Headers, claims: SessionClaims | None, *, content_type: bool
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")] if content_type else []
        for key, value in headers:
            if key in _RELAYED or key.startswith(_PARAM_PREFIX):
                # MCP 2026-07-28: unknown Mcp-Param-* headers must be forwarded.
                out.append((key, value.strip(b" \t")))
        if claims is not None and claims.upstream_session_id:
            out.append((b"mcp-session-id", claims.upstream_session_id.encode("latin-1")))
        if route.credential is not None:
            out.append(route.credential)
        return out

    async def _upstream_failed(self, send: Send, ctx: Any, exc: UpstreamError, request_id: Any) -> None:
        timeout = isinstance(exc, UpstreamTimeout)
        status = 504 if timeout else 502
        ctx.outcome = "timeout" if timeout else "upstream_error"
        ctx.http_status = status
        ctx.error = type(exc).__name__
        if isinstance(exc, UpstreamIdentityError):
            # SECURITY.md: a different TLS key than pinned: nothing sent, audited as an identity mismatch.
            ctx.outcome = "identity_mismatch"
            self.recorder.security_event(ctx.route, "identity_mismatch", {"error": str(exc)}, self.clock())
        text = "Gateway Timeout: the upstream did not answer in time" if timeout else "Bad Gateway: the upstream failed"
        await respond(send, status, jsonrpc.error_body(request_id, jsonrpc.INTERNAL_ERROR, text))

    def _rejecter(self, route: Route, claims: SessionClaims | None, era: Era) -> Callable[[Any, str], None]:
        def reject(request_id: Any, method: str) -> None:
            task = asyncio.get_running_loop().create_task(
                self._reject_server_request(route, claims, era, request_id, method)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return reject

    async def _reject_server_request(
        self, route: Route, claims: SessionClaims | None, era: Era, request_id: Any, method: str
    ) -> None:
        # Answer the upstream's refused request ourselves so that it does not wait forever.
        headers = self._upstream_headers(route, [], claims, content_type=True)
        headers.append((b"accept", b"application/json, text/event-stream"))
        if era.version is not None:
            headers.append((b"mcp-protocol-version", era.version.encode()))
        body = jsonrpc.error_body(request_id, jsonrpc.INVALID_REQUEST, f"{method} is not permitted by the gateway")
        try:
            response = await route.pool.request("POST", route.upstream_path, headers, body)
            await response.aclose()
        except UpstreamError:
            pass  # best effort: the upstream's own timeout ends its wait

    # -- GET / DELETE -----------------------------------------------------------------------------

    async def _get_or_delete(
        self, route: Route, ctx: Any, method: str, headers: Headers, receive: Receive, send: Send
    ) -> None:
        raw = header(headers, b"mcp-protocol-version")
        version = raw.decode("latin-1") if raw is not None else None
        if version in MODERN_VERSIONS:
            # MCP 2026-07-28: no standalone streams and no sessions: GET and DELETE are 405.
            raise TransportRejected(
                "Method Not Allowed in protocol 2026-07-28", status_code=405, headers=[("allow", "POST")]
            )
        if version not in HANDSHAKE_VERSIONS:
            # As for POST: an absent header means 2025-03-26, which this gateway does not serve.
            raise _unsupported_version(version if version is not None else "2025-03-26")
        if method == "GET" and b"text/event-stream" not in (header(headers, b"accept") or b""):
            raise TransportRejected("Not Acceptable: GET requires Accept: text/event-stream", status_code=406)
        principal = await self._authenticate(route, headers, ctx)
        era = Era(False, version)
        claims = self._session(route, headers, principal, ctx, era, initialize=False)
        assert claims is not None  # a handshake request without a session was refused with 400
        event_ids = self.sealer.event_ids(claims)
        upstream_headers = self._upstream_headers(route, headers, claims, content_type=False)
        last_event_id = header(headers, b"last-event-id") if method == "GET" else None
        if last_event_id is not None:
            upstream_event_id = event_ids.untag(last_event_id.strip(b" \t"))
            if upstream_event_id is None:
                # MCP transports §Resumability: never replay another stream's messages, let alone
                # another session's: only an id this session was given resumes it.
                raise ProtocolRejected(
                    "Bad Request: Last-Event-ID was not issued in this session", jsonrpc_code=jsonrpc.INVALID_REQUEST
                )
            upstream_headers.append((b"last-event-id", upstream_event_id))
        judge = UpstreamMessageJudge(
            route.policy,
            principal.scopes,
            governs_server_requests=True,
            secret=route.credential_secret,
            catalogue=route.catalogue,
        )
        # A GET with Last-Event-ID replays a POST stream, whose response may be among the events.
        state = StreamState(resumed=last_event_id is not None)
        options = RelayOptions(
            max_event_bytes=self.config.max_event_bytes,
            max_body_bytes=self.config.max_body_bytes,
            session_sent=bool(claims is not None and claims.upstream_session_id),
            seal=None,
            resumable=True,
            reject_server_request=self._rejecter(route, claims, era),
            event_ids=event_ids,
        )
        try:
            await self._exchange(route, method, upstream_headers, b"", judge, state, ctx, options, receive, send)
        finally:
            status = ctx.http_status or 0
            if method == "DELETE" and 200 <= status < 300:
                # Ended by the client: its place under max_sessions_per_principal is free again.
                self.sessions.closed(self._fingerprint(principal), route.name, claims.upstream_session_id)
            else:
                self._forget_if_gone(route, claims, principal, ctx)

    # -- refusals ---------------------------------------------------------------------------------

    async def _refuse(self, send: Send, exc: HTTPError, ctx: Any, extra: Any) -> None:
        msg = ctx.message
        body = jsonrpc.error_body(
            msg.id if msg is not None and msg.kind == "request" else None, exc.jsonrpc_code, exc.message, exc.data
        )
        head = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]
        ctx.http_status = exc.status_code
        ctx.outcome = ctx.outcome or "denied"  # a relay that raised has already said what happened
        if isinstance(exc, InsufficientScope):
            ctx.step_up = True
        if exc.status_code == 499:
            return  # the client is gone; nobody to answer
        if (
            isinstance(exc, SessionNotFound | AuthError)
            or exc.status_code == 429
            or (msg is not None and msg.method in AUDITED_METHODS)
        ):
            # SECURITY.md: every refusal at an MCP endpoint leaves an audit record.
            self.recorder.refusal(ctx)
        await respond(send, exc.status_code, body, head)
