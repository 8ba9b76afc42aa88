"""The approvers' and auditors' HTTP surface: `GET /approvals`, `POST /approvals/{id}`, the audit read API,
the console's files, and the protected-resource metadata of all of them.

Every answer carries a strict Content-Security-Policy, `X-Frame-Options: DENY` and `Cache-Control: no-store`.
Requests authenticate with a bearer token for the resource `{public_url}/approvals` (RFC 8707), never a
cookie; the console keeps the token in its tab's memory only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qs

from mcp_gateway.approvals import console
from mcp_gateway.approvals.audit_api import AuditReadAPI
from mcp_gateway.approvals.ledger import ApprovalLedger, ApprovalRefused
from mcp_gateway.approvals.rules import API_PATH, AUDIT_READ_SCOPE, parse_verdict
from mcp_gateway.auth.bearer import bearer_credential, checked_token
from mcp_gateway.auth.principal import Principal
from mcp_gateway.auth.verifier import TokenVerifier
from mcp_gateway.config import GatewayConfig
from mcp_gateway.errors import AuthError, HTTPError, InsufficientScope
from mcp_gateway.policy.scopes import ScopeHierarchy
from mcp_gateway.transport.asgi import Receive, Scope, Send, header
from mcp_gateway.transport.guard import OriginGuard
from mcp_gateway.transport.limits import read_body

SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_METADATA_PATH: Final = "/.well-known/oauth-protected-resource" + API_PATH
_MAX_BODY: Final = 16 * 1024


class ApproverEndpoints:
    """Routes under `/approvals`, `/audit/` and `/console`, plus their RFC 9728 metadata document."""

    def __init__(
        self,
        config: GatewayConfig,
        verifier: TokenVerifier,
        ledger: ApprovalLedger,
        guard: OriginGuard,
        hierarchy: ScopeHierarchy,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.ledger = ledger
        self.guard = guard
        self.hierarchy = hierarchy
        self.resource = config.public_url + API_PATH  # RFC 8707: the audience of every token used here
        self.metadata_url = _metadata_url(config.public_url)
        self.audit = AuditReadAPI(config, clock)
        self.approver_scopes = tuple(
            sorted({rule.approver_scope for entry in config.servers.values() for rule in entry.approvals.values()})
        )
        self._max_token = config.auth.max_token_bytes if config.auth else 8192

    @staticmethod
    def handles(path: str) -> bool:
        return (
            path in (API_PATH, _METADATA_PATH) or path.startswith((API_PATH + "/", "/audit/")) or console.handles(path)
        )

    async def __call__(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        method = scope["method"]
        try:
            self.guard.check(header(headers, b"host"), header(headers, b"origin"))
            if console.handles(path):
                await console.serve(path, method, send, SECURITY_HEADERS)
            elif path == _METADATA_PATH:
                _allow(method, "GET")
                await _json(send, 200, self._metadata())
            elif path == API_PATH:
                _allow(method, "GET")
                await self._list(await self._approver(headers), send)
            elif path.startswith(API_PATH + "/"):
                _allow(method, "POST")
                approver = await self._approver(headers)
                body = await read_body(receive, headers, _MAX_BODY)
                await self._decide(path.removeprefix(API_PATH + "/"), approver, body, send)
            else:
                _allow(method, "GET")
                principal = await self._approver(headers)
                if AUDIT_READ_SCOPE not in principal.scopes:
                    raise self._step_up((AUDIT_READ_SCOPE,))
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=False)
                status, value = await self.audit.answer(path, {k: v[0] for k, v in query.items()})
                await _json(send, status, value)
        except AuthError as exc:
            exc.with_challenge(resource_metadata=self.metadata_url, scopes=self.approver_scopes)
            extra: tuple[tuple[bytes, bytes], ...] = ((b"www-authenticate", exc.www_authenticate().encode("latin-1")),)
            error = {"error": exc.error_code or "unauthorized", "message": exc.message}
            await _json(send, exc.status_code, error, extra)
        except HTTPError as exc:
            if exc.status_code == 499:
                return
            extra = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers)
            await _json(send, exc.status_code, {"error": "refused", "message": exc.message}, extra)

    async def _approver(self, headers: Sequence[tuple[bytes, bytes]]) -> Principal:
        token = checked_token(bearer_credential(headers, max_token_bytes=self._max_token))
        principal = await self.verifier.verify(token, resource=self.resource)
        # Scope implications (`scope_implications`) count here as they do on the MCP routes.
        return dataclasses.replace(principal, scopes=self.hierarchy.expand(principal.scopes))

    def _step_up(self, scopes: tuple[str, ...]) -> InsufficientScope:
        return InsufficientScope("The token lacks a scope this operation needs", scopes=scopes)

    async def _list(self, approver: Principal, send: Send) -> None:
        if not approver.scopes.intersection(self.approver_scopes):
            raise self._step_up(self.approver_scopes)
        shown = [p.view() for p in self.ledger.pending() if p.rule.approver_scope in approver.scopes]
        await _json(send, 200, {"approvals": shown, "now": self.ledger.clock()})

    async def _decide(self, approval_id: str, approver: Principal, body: bytes, send: Send) -> None:
        try:
            verdict, reason, digest = parse_verdict(json.loads(body))
        except (ValueError, RecursionError) as exc:
            await _json(send, 400, {"error": "invalid_request", "message": str(exc)})
            return
        pending = self.ledger.get(approval_id)
        if pending is not None and pending.rule.approver_scope not in approver.scopes:
            raise self._step_up((pending.rule.approver_scope,))
        try:
            decided = self.ledger.decide(approval_id, approver, verdict, reason, digest)
        except ApprovalRefused as exc:
            await _json(send, exc.status, {"error": "refused", "message": exc.message})
            return
        answer = {"id": approval_id, "decision": decided.resolution, "approver": decided.approver, "at": decided.at}
        await _json(send, 200, answer)

    def _metadata(self) -> dict[str, Any]:
        auth = self.config.auth
        servers = list(auth.authorization_servers or (auth.issuer,)) if auth is not None else []
        return {
            # RFC 9728 §3.3: the resource identifier tokens for the approvals API and the console are for.
            "resource": self.resource,
            "authorization_servers": servers,
            "scopes_supported": sorted({*self.approver_scopes, AUDIT_READ_SCOPE}),
            "bearer_methods_supported": ["header"],
            "resource_name": "approvals and audit console",
        }


def _metadata_url(public_url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path}{API_PATH}"


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HTTPError("Method Not Allowed", status_code=405, headers=[("allow", allowed)])


async def _json(send: Send, status: int, value: Any, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
