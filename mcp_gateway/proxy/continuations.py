"""Continuation state bound to its principal: every `requestState` relayed is sealed to (principal, route).

MCP 2026-07-28 (SEP-2322, input-required results): a server that needs input answers an interactive
request (`tools/call`, `prompts/get`, `resources/read`) with `result.resultType = "input_required"`,
`result.inputRequests` and an opaque `result.requestState`; the client retries the original request with
`params.inputResponses` and `params.requestState` echoed verbatim, and intermediaries must pass
`requestState` untouched. Behind the gateway the upstream sees one gateway credential for every
principal, so whatever binding it puts in its state cannot tell them apart: anyone holding another
principal's `requestState` would receive the continuation of that principal's call. The gateway therefore
seals each state it relays into an AES-GCM envelope whose associated data names the route and the
principal's fingerprint, and opens it on the way back to the exact original string, so the upstream
receives what it issued. A state that does not open for this principal and route is refused unforwarded.
"""

from __future__ import annotations

import base64
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_gateway.auth.principal import Principal
from mcp_gateway.errors import ProtocolRejected
from mcp_gateway.policy.decision import Decision
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.context import CallContext
from mcp_gateway.proxy.sessions import canonical_b64url, principal_fingerprint

_VERSION = b"\x01"
_OVERHEAD = 1 + 12 + 16  # version, nonce, GCM tag
STATE_KEY = "requestState"  # params.requestState (request) and result.requestState (InputRequiredResult)
NOT_ISSUED = "Invalid params: requestState was not issued to this principal"


class ContinuationSealer:
    """Seals and opens `requestState` values with one key derived at start-up (one AEAD op each)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the continuation key must be 32 bytes")
        # A purpose-bound subkey: a sealed session id never opens as a state, nor the other way round.
        self._aead = AESGCM(hmac.digest(key, b"mcp-gateway request state v1", "sha256"))

    def bound(self, server: str, principal: Principal) -> BoundContinuations:
        return BoundContinuations(self._aead, server, principal)


class BoundContinuations:
    """Sealing and opening for one (route, principal); the fingerprint is computed only if a state appears."""

    __slots__ = ("_aad", "_aead", "_principal", "_server")

    def __init__(self, aead: AESGCM, server: str, principal: Principal) -> None:
        self._aead = aead
        self._server = server
        self._principal = principal
        self._aad: bytes | None = None

    def _associated_data(self) -> bytes:
        if self._aad is None:
            fingerprint = principal_fingerprint(self._principal.binding_key())
            self._aad = b"\x00".join((_VERSION, self._server.encode(), fingerprint.encode()))
        return self._aad

    def seal(self, state: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, state.encode("utf-8", "surrogatepass"), self._associated_data())
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, sealed: Any) -> str | None:
        """The original state, or None for anything not sealed by `seal` for this route and principal."""
        raw = canonical_b64url(sealed) if isinstance(sealed, str) else None
        if raw is None or len(raw) < _OVERHEAD or raw[:1] != _VERSION:
            return None
        try:
            plaintext = self._aead.decrypt(raw[1:13], raw[13:], self._associated_data())
        except InvalidTag:
            return None
        return plaintext.decode("utf-8", "surrogatepass")

    def seal_result(self, result: dict[str, Any]) -> bool:
        """Seal `result.requestState` in place; True when the result changed."""
        state = result.get(STATE_KEY)
        if not isinstance(state, str):
            return False
        result[STATE_KEY] = self.seal(state)
        return True


def inbound_body(ctx: CallContext, body: bytes, continuations: BoundContinuations) -> bytes:
    """The body to forward: the client's, with a `params.requestState` opened back to the upstream's own.

    Refused (400, -32602) without forwarding when the state was not sealed for this principal and route:
    another principal's, another route's, forged, or re-spelled (only the canonical encoding opens).
    """
    msg = ctx.message
    assert msg is not None
    params = msg.body.get("params")
    if msg.kind != "request" or not isinstance(params, dict) or STATE_KEY not in params:
        return body
    original = continuations.open(params[STATE_KEY])
    if original is None:
        decided = ctx.decision
        ctx.decision = Decision("deny", decided.scopes_required if decided else (), "request_state")
        raise ProtocolRejected(NOT_ISSUED, jsonrpc_code=jsonrpc.INVALID_PARAMS)
    return jsonrpc.dumps({**msg.body, "params": {**params, STATE_KEY: original}})
