"""Server-to-client request ids bound to their session: a client response must answer a request the gateway relayed.

Handshake eras (2025-06-18, 2025-11-25): the upstream asks the client (sampling/createMessage,
elicitation/create, roots/list, ping) with a JSON-RPC request on an SSE stream, and the client answers
with a JSON-RPC response it POSTs. Without a check, a client can POST a "response" to any id: one the
gateway never relayed (a request the `server_requests` policy refused, which the gateway answered
itself), one relayed to another principal's session (the upstream sees one gateway credential for
every principal, and numbers its requests with guessable counters), or one from another route.

So every server-to-client request id the gateway relays is replaced by a tag: `mcpgw-` followed by
an AES-GCM envelope (strict base64url, no padding) of the original id's JSON, whose associated data
names the route and the session (upstream session id, owning principal's fingerprint, creation time).
No state is kept: any replica with the key opens a tag, as any replica opens a sealed session id. On
the way in, a response whose id does not open for this session and route is refused unforwarded; one
that opens is forwarded with the original id restored, JSON type included (an integer stays one).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_gateway.errors import MessageRefused
from mcp_gateway.policy.decision import Decision
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.context import CallContext
from mcp_gateway.proxy.sessions import SessionClaims, canonical_b64url

PREFIX = "mcpgw-"
_VERSION = b"\x01"
_OVERHEAD = 1 + 12 + 16  # version, nonce, GCM tag
_MAX_TAG_CHARS = 1024  # a tag of the longest id worth answering; anything longer was never issued
NOT_RELAYED = "Invalid Request: the response answers no request the gateway relayed in this session"
REFUSED_RESPONSE = Decision("deny", (), "server_request_id")


class ServerRequestIdSealer:
    """Tags and opens relayed server-to-client request ids with one key derived at start-up."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the server request id key must be 32 bytes")
        # A purpose-bound subkey: a tag never opens as a session id or a requestState, nor the other way round.
        self._aead = AESGCM(hmac.digest(key, b"mcp-gateway server request id v1", "sha256"))

    def bound(self, claims: SessionClaims) -> BoundServerRequestIds:
        return BoundServerRequestIds(self._aead, claims)


class BoundServerRequestIds:
    """Tagging and opening for one session on one route; the associated data is built only if an id appears."""

    __slots__ = ("_aad", "_aead", "_claims")

    def __init__(self, aead: AESGCM, claims: SessionClaims) -> None:
        self._aead = aead
        self._claims = claims
        self._aad: bytes | None = None

    def _associated_data(self) -> bytes:
        if self._aad is None:
            claims = self._claims
            session = [claims.server, claims.upstream_session_id, claims.principal, claims.created]
            self._aad = _VERSION + json.dumps(session, separators=(",", ":")).encode()
        return self._aad

    def tag(self, request_id: str | int) -> str:
        nonce = os.urandom(12)
        plaintext = json.dumps(request_id).encode()
        sealed = self._aead.encrypt(nonce, plaintext, self._associated_data())
        return PREFIX + base64.urlsafe_b64encode(_VERSION + nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, tagged: Any) -> str | int | None:
        """The original id inside `tagged`, or None for anything `tag` did not produce for this session.

        SECURITY.md "Identifiers the gateway issues have one accepted spelling": only the canonical
        base64url `tag` produced opens.
        """
        if not isinstance(tagged, str) or not tagged.startswith(PREFIX) or len(tagged) > _MAX_TAG_CHARS:
            return None
        raw = canonical_b64url(tagged[len(PREFIX) :])
        if raw is None or len(raw) < _OVERHEAD or raw[:1] != _VERSION:
            return None
        try:
            original = json.loads(self._aead.decrypt(raw[1:13], raw[13:], self._associated_data()))
        except (InvalidTag, ValueError):
            return None
        # Only what `tag` was given comes out of a genuine tag; the check keeps the types honest.
        if isinstance(original, bool) or not isinstance(original, str | int):
            return None
        return original

    def relabel(self, message: dict[str, Any]) -> bytes:
        """The server-to-client request `message`, re-encoded with its id replaced by a tag."""
        return jsonrpc.dumps({**message, "id": self.tag(message["id"])})


def inbound_response(ctx: CallContext, body: bytes, ids: BoundServerRequestIds) -> bytes:
    """The body to forward for a client message: a response gets its original id back; others pass as they are.

    Refused (400, -32600) without forwarding when the id was not tagged for this session and route:
    forged, another session's or principal's, another route's, or re-spelled.
    """
    msg = ctx.message
    assert msg is not None
    if msg.kind != "response":
        return body
    original = ids.open(msg.id)
    if original is None:
        ctx.decision = REFUSED_RESPONSE
        raise MessageRefused(NOT_RELAYED, jsonrpc_code=jsonrpc.INVALID_REQUEST)
    return jsonrpc.dumps({**msg.body, "id": original})
