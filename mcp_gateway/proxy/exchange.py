"""The upstream exchange: one request to the pinned upstream, with the gateway's credential, relayed back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_gateway.auth.principal import Principal
from mcp_gateway.config import GatewayConfig
from mcp_gateway.credentials import CredentialFailures, CredentialRequest, CredentialUse, IssuedCredential
from mcp_gateway.errors import UpstreamCredentialError, UpstreamError, UpstreamIdentityError
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.context import ABORTED, CallContext, Outcome
from mcp_gateway.proxy.continuations import ContinuationSealer
from mcp_gateway.proxy.era import Era
from mcp_gateway.proxy.recording import CallRecorder
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.route import Route
from mcp_gateway.proxy.server_request_ids import ServerRequestIdSealer
from mcp_gateway.proxy.sessions import EventIds, SessionClaims, SessionSealer
from mcp_gateway.proxy.streaming import DisconnectWatch, RelayOptions, relay_response
from mcp_gateway.transport.asgi import Headers, Receive, Send, respond
from mcp_gateway.upstream.http11 import UpstreamResponse

# Request headers relayed upstream: an allowlist, so hop-by-hop headers, cookies, the client's
# Authorization and forwarding headers are never passed on (MCP authorization §Token Passthrough).
_RELAYED = frozenset({b"accept", b"mcp-protocol-version", b"mcp-method", b"mcp-name", b"traceparent", b"tracestate"})
_PARAM_PREFIX = b"mcp-param-"
_JSON = (b"content-type", b"application/json")


@dataclass(slots=True)
class Leg:
    """One request toward the upstream, before the gateway's credential is added."""

    method: str  # POST, GET or DELETE
    headers: list[tuple[bytes, bytes]]  # relayed client headers and the upstream session id
    body: bytes
    credential: CredentialRequest


def upstream_headers(
    headers: Headers, claims: SessionClaims | None, *, content_type: bool
) -> list[tuple[bytes, bytes]]:
    """The client's headers that may go upstream, plus the upstream's own session id."""
    out: list[tuple[bytes, bytes]] = [_JSON] if content_type else []
    for key, value in headers:
        if key in _RELAYED or key.startswith(_PARAM_PREFIX):
            # MCP 2026-07-28: unknown Mcp-Param-* headers must be forwarded.
            out.append((key, value.strip(b" \t")))
    if claims is not None and claims.upstream_session_id:
        out.append((b"mcp-session-id", claims.upstream_session_id.encode("latin-1")))
    return out


def credential_request(ctx: CallContext) -> CredentialRequest:
    """What the route's credential source is asked for on behalf of this call."""
    msg, route = ctx.message, ctx.route
    return CredentialRequest(
        server=route.name,
        upstream_url=route.entry.url,
        principal=ctx.principal,
        method=msg.method if msg is not None else None,
        name=msg.name if msg is not None else None,
        scopes=ctx.decision.scopes_required if ctx.decision is not None else (),
        subject_token=ctx.bearer_token.decode("ascii") if ctx.bearer_token is not None else None,
    )


class UpstreamExchange:
    """Sends legs to upstreams and relays their answers, judging every message on the way back."""

    def __init__(
        self,
        config: GatewayConfig,
        recorder: CallRecorder,
        clock: Callable[[], float],
        keys: SessionSealer,
    ) -> None:
        # Seals each requestState relayed to its principal and route, and tags each server request id
        # relayed to its session: both with subkeys of the session key, so every replica opens them.
        self.continuations = ContinuationSealer(keys.continuation_key)
        self.server_request_ids = ServerRequestIdSealer(keys.server_request_key)
        self.max_event_bytes = config.max_event_bytes
        self.max_body_bytes = config.max_body_bytes
        self.recorder = recorder
        self.clock = clock
        self._background: set[asyncio.Task[None]] = set()
        self.credential_failures = CredentialFailures()

    def relay_plan(
        self, route: Route, principal: Principal, era: Era, claims: SessionClaims | None, event_ids: EventIds | None
    ) -> tuple[UpstreamMessageJudge, RelayOptions]:
        """How the answer to one leg is judged and relayed (the same for POST, GET and DELETE)."""
        judge = UpstreamMessageJudge(
            route.policy,
            principal.scopes,
            governs_server_requests=not era.modern,
            catalogue=route.catalogue,
            continuations=self.continuations.bound(route.name, principal),
            server_request_ids=None if claims is None or era.modern else self.server_request_ids.bound(claims),
        )
        options = RelayOptions(
            max_event_bytes=self.max_event_bytes,
            max_body_bytes=self.max_body_bytes,
            session_sent=claims is not None and bool(claims.upstream_session_id),
            seal=None,
            resumable=not era.modern,
            reject_server_request=None if era.modern else self._rejecter(route, claims, era),
            event_ids=event_ids,
        )
        return judge, options

    async def run(
        self,
        route: Route,
        leg: Leg,
        relay: tuple[UpstreamMessageJudge, StreamState, RelayOptions],
        ctx: CallContext,
        receive: Receive,
        send: Send,
    ) -> Outcome:
        """One upstream request and its relayed response, cut short if the client goes away."""
        judge, state, options = relay
        outcome = ABORTED
        attempt = _Attempt()
        async with DisconnectWatch(receive, send) as watch:
            try:
                response = await self._request(route, leg, judge, attempt)
            except UpstreamError as exc:
                outcome = await self._failed(route, watch.send, exc, state.request_id)
            else:
                outcome = await relay_response(response, send=watch.send, judge=judge, state=state, options=options)
        if watch.disconnected:
            outcome = ABORTED
        self._report_quarantines(route)
        return dataclasses.replace(outcome, credential=attempt.use) if attempt.use is not None else outcome

    async def _request(
        self, route: Route, leg: Leg, judge: UpstreamMessageJudge, attempt: _Attempt
    ) -> UpstreamResponse:
        credentials = route.credentials
        credential = await _issue(route, leg, attempt)
        # SECURITY.md: the injected credential never appears in responses: every live secret is redacted,
        # and the one this request carried for as long as its answer lasts, even if rotated out meanwhile.
        judge.secrets = credential.secrets + credentials.secrets
        response = await route.pool.request(
            leg.method, route.upstream_path, [*leg.headers, *credential.headers], leg.body
        )
        if response.status == 401 and await credentials.rejected(leg.credential, credential, 401):
            # RFC 6750 §3.1: a 401 means the request was not executed, so it may be retried once with the
            # refreshed credential; a second refusal is the credential failure it is (502, never a loop).
            await response.aclose()
            credential = await _issue(route, leg, attempt)
            judge.secrets = credential.secrets + credentials.secrets
            response = await route.pool.request(
                leg.method, route.upstream_path, [*leg.headers, *credential.headers], leg.body
            )
            refreshed = " after one refresh"
        else:
            refreshed = ""
        if response.status in (401, 403) and credential.use is not None:
            await response.aclose()
            why = f"the upstream answered {response.status}{refreshed}"
            raise UpstreamCredentialError(route.name, credential.use.type, "upstream_refused", why)
        return response

    async def _failed(self, route: Route, send: Send, exc: UpstreamError, request_id: Any) -> Outcome:
        if isinstance(exc, UpstreamIdentityError):
            # SECURITY.md: a different TLS key than pinned: nothing sent, audited as an identity mismatch.
            self.recorder.security_event(route, "identity_mismatch", {"error": str(exc)}, self.clock())
        status = exc.status_code
        text = (
            "Gateway Timeout: the upstream did not answer in time"
            if status == 504
            else "Bad Gateway: the upstream failed"
        )
        if isinstance(exc, UpstreamCredentialError):
            # Which upstream credential failed and why (the message never holds a secret), counted for alerts.
            text = str(exc)
            self.credential_failures.count(exc.server, exc.credential_type, exc.reason)
        await respond(send, status, jsonrpc.error_body(request_id, jsonrpc.INTERNAL_ERROR, text))
        return Outcome(exc.outcome, status, type(exc).__name__)

    def _report_quarantines(self, route: Route) -> None:
        catalogue = route.catalogue
        if catalogue is None or not catalogue.pending:
            return
        for check in catalogue.take_pending():
            # Audited with both hashes, once per distinct presented definition.
            detail = {
                "tool": check.name,
                "status": check.status,
                "pinned": check.expected,
                "presented": check.presented,
            }
            self.recorder.security_event(route, "tool_quarantined", detail, self.clock())

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
        headers = upstream_headers((), claims, content_type=True)
        headers.append((b"accept", b"application/json, text/event-stream"))
        if era.version is not None:
            headers.append((b"mcp-protocol-version", era.version.encode()))
        body = jsonrpc.error_body(request_id, jsonrpc.INVALID_REQUEST, f"{method} is not permitted by the gateway")
        answer = CredentialRequest(route.name, route.entry.url, None, method, None, ())
        try:
            headers.extend((await route.credentials.issue(answer)).headers)
            response = await route.pool.request("POST", route.upstream_path, headers, body)
            await response.aclose()
        except UpstreamError:
            pass  # best effort: the upstream's own timeout ends its wait


class _Attempt:
    """What one exchange learned about the credential it sent (returned in its Outcome, for the audit)."""

    __slots__ = ("use",)

    def __init__(self) -> None:
        self.use: CredentialUse | None = None


async def _issue(route: Route, leg: Leg, attempt: _Attempt) -> IssuedCredential:
    try:
        credential = await route.credentials.issue(leg.credential)
    except UpstreamCredentialError as exc:
        attempt.use = CredentialUse(exc.credential_type)  # the record says which credential failed
        raise
    attempt.use = credential.use
    return credential
