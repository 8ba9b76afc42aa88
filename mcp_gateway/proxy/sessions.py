"""Sealed session ids: the upstream's session id and the owning principal, under AES-GCM."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_gateway.errors import SessionNotFound

_VERSION = b"\x01"
_MAX_SEALED_CHARS = 1024
_EVENT_TAG_BYTES = 12  # 96 bits: 16 base64url characters, no padding
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a sealed id carries: which route, which upstream session, whose it is, when it began."""

    server: str
    upstream_session_id: str
    principal: str  # SHA-256 (hex) of Principal.binding_key(); never the raw subject
    created: int

    def expired(self, now: float, *, max_age_seconds: float) -> bool:
        """Whether the session has reached `session_max_age_seconds` (the id carries its creation time)."""
        return now - self.created >= max_age_seconds


class EventIds:
    """Binds the SSE event ids relayed in one session to that session, so that only they resume it.

    MCP transports (2025-11-25) §Resumability: a resumed stream must never replay another stream's
    messages. Upstreams number events with guessable counters and may keep one event store for every
    session (the example upstream does), so a client could otherwise resume another principal's
    stream by sending its event id. Each relayed id carries a MAC over the session's claims; a
    Last-Event-ID without a valid one is refused before anything reaches the upstream.
    """

    __slots__ = ("_mac",)

    def __init__(self, key: bytes, claims: SessionClaims) -> None:
        context = "\x00".join((claims.server, claims.upstream_session_id, claims.principal, "")).encode()
        # HMAC(key, context + event_id): the state after the context is computed once per session and
        # copied for each id, which gives the same MAC as hashing the concatenation each time.
        self._mac = hmac.new(key, context, hashlib.sha256)

    def tag(self, event_id: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(event_id)
        return event_id + b"." + base64.urlsafe_b64encode(mac.digest()[:_EVENT_TAG_BYTES])

    def untag(self, tagged: bytes) -> bytes | None:
        """The upstream's event id inside `tagged`, or None if this session did not issue it.

        SECURITY.md "Identifiers the gateway issues have one accepted spelling": `tagged` must be byte
        for byte what `tag` produced (the MAC in strict base64url, no padding); another spelling of the
        same MAC (`+`/`/`, `=`, whitespace, other bytes) is an id this session never issued.
        """
        event_id, dot, _ = tagged.rpartition(b".")
        if not dot or not hmac.compare_digest(self.tag(event_id), tagged):
            return None
        return event_id


def principal_fingerprint(binding_key: str) -> str:
    return hashlib.sha256(binding_key.encode()).hexdigest()


class SessionSealer:
    """Seals and opens session ids with one key derived at start-up (one AEAD op per call).

    MCP transports (2025-11-25) §Session Management: the id MUST be globally unique and
    cryptographically secure and contain only visible ASCII (0x21-0x7E); base64url satisfies both.
    Any replica holding the key can open an id, so no shared session store is needed.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the session key must be 32 bytes")
        # Derive purpose-bound subkeys so that the configured secret is never used directly.
        self._aead = AESGCM(hmac.digest(key, b"mcp-gateway session seal v1", "sha256"))
        self._event_key = hmac.digest(key, b"mcp-gateway event id v1", "sha256")
        self.continuation_key = hmac.digest(key, b"mcp-gateway continuation v1", "sha256")  # proxy/continuations.py
        self.server_request_key = hmac.digest(
            key, b"mcp-gateway server request id v1", "sha256"
        )  # server_request_ids.py
        # Ids that opened before, with what they opened to. `open` is a pure function of the id, the
        # route and the principal (the key never changes), so a hit is the answer the AEAD would give;
        # only successes are kept, and at most _OPENED_CACHE_SIZE of them (oldest dropped first).
        self._opened: dict[tuple[str, str, str], SessionClaims] = {}
        self._event_ids: dict[SessionClaims, EventIds] = {}

    def seal(self, claims: SessionClaims) -> str:
        plaintext = json.dumps(
            [claims.upstream_session_id, claims.principal, claims.created], separators=(",", ":")
        ).encode()
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, _VERSION + claims.server.encode())
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, sealed_id: str, *, server: str, principal: str) -> SessionClaims:
        """Return the claims, or raise SessionNotFound for anything forged, foreign or for another route."""
        key = (sealed_id, server, principal)
        claims = self._opened.get(key)
        if claims is None:
            claims = self._open(sealed_id, server=server, principal=principal)
            _remember(self._opened, key, claims)
        return claims

    def _open(self, sealed_id: str, *, server: str, principal: str) -> SessionClaims:
        if len(sealed_id) > _MAX_SEALED_CHARS:
            raise SessionNotFound("Session not found")
        raw = canonical_b64url(sealed_id)
        if raw is None or len(raw) < 1 + 12 + 16 or raw[:1] != _VERSION:
            raise SessionNotFound("Session not found")
        try:
            # The route name is associated data: an id minted for /a/mcp does not open on /b/mcp.
            plaintext = self._aead.decrypt(raw[1:13], raw[13:], _VERSION + server.encode())
            upstream_id, owner, created = json.loads(plaintext)
        except (InvalidTag, ValueError, TypeError) as exc:
            raise SessionNotFound("Session not found") from exc
        # MCP security best practices §Session Hijacking: bind sessions to the user; another
        # principal presenting this id gets the same answer as for an unknown one.
        if not hmac.compare_digest(str(owner), principal):
            raise SessionNotFound("Session not found")
        return SessionClaims(server, str(upstream_id), str(owner), int(created))

    def event_ids(self, claims: SessionClaims) -> EventIds:
        event_ids = self._event_ids.get(claims)
        if event_ids is None:
            event_ids = EventIds(self._event_key, claims)
            _remember(self._event_ids, claims, event_ids)
        return event_ids


_OPENED_CACHE_SIZE = 4096


def canonical_b64url(text: str) -> bytes | None:
    """The bytes `text` spells in strict, unpadded base64url (RFC 4648 §5, §3.2), or None.

    SECURITY.md "Identifiers the gateway issues have one accepted spelling". Python's decoder is lenient:
    it skips characters outside the alphabet (whitespace), takes `+` and `/` for `-` and `_`, accepts `=`
    padding and ignores the unused low bits of the last character, so several strings open to the same
    session. Each would be audited as a different session id, and `audit query --session` would miss the
    calls made under the others. Only the spelling `seal` produces is accepted: re-encoding the decoded
    bytes must give back `text` exactly (RFC 4648 §3.5: canonical encoding, pad bits zero).
    """
    if not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != text.encode("ascii"):
        return None
    return raw


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    if len(cache) >= _OPENED_CACHE_SIZE:
        del cache[next(iter(cache))]  # the oldest entry: dicts keep insertion order
    cache[key] = value
