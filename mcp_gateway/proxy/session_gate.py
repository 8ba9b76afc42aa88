"""Handshake sessions at the front door: opening sealed ids, counting sessions per principal, expiry."""

from __future__ import annotations

from collections.abc import Callable

from mcp_gateway.auth.principal import Principal
from mcp_gateway.errors import SessionNotFound
from mcp_gateway.limits import LimitStore
from mcp_gateway.proxy.sessions import EventIds, SessionClaims, SessionSealer, principal_fingerprint

_FINGERPRINT_CACHE_SIZE = 4096


class SessionGate:
    """Binds handshake sessions to principals (MCP transports §Session Management; SECURITY.md).

    A session id is the gateway's own sealed id, bound to the principal that created it; the limit store
    counts each principal's sessions (`max_sessions_per_principal`) and `max_age_seconds` ends them.
    """

    def __init__(
        self, sealer: SessionSealer, limits: LimitStore, *, max_age_seconds: float, clock: Callable[[], float]
    ) -> None:
        self.sealer = sealer
        self.limits = limits
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._fingerprints: dict[tuple[str, str | None, str], str] = {}

    def fingerprint(self, principal: Principal) -> str:
        # `binding_key()` is JSON of exactly these three fields, so they key its fingerprint.
        key = (principal.issuer, principal.subject, principal.agent_id)
        fingerprint = self._fingerprints.get(key)
        if fingerprint is None:
            fingerprint = principal_fingerprint(principal.binding_key())
            if len(self._fingerprints) >= _FINGERPRINT_CACHE_SIZE:
                self._fingerprints.clear()
            self._fingerprints[key] = fingerprint
        return fingerprint

    async def open(self, server: str, sealed_id: str, principal: Principal) -> SessionClaims:
        """The claims of a session id this principal holds on this route; 404 for any other id."""
        fingerprint = self.fingerprint(principal)
        claims = self.sealer.open(sealed_id, server=server, principal=fingerprint)
        if claims.expired(self.clock(), max_age_seconds=self.max_age_seconds):
            # session_max_age_seconds: past it the session is over on every replica (the id carries its
            # creation time); 404 tells the client to initialize a new one (MCP transports §Session Management).
            await self.limits.session_closed(fingerprint, server, claims.upstream_session_id)
            raise SessionNotFound("Session not found: it expired (session_max_age_seconds); initialize a new one")
        return claims

    def event_ids(self, claims: SessionClaims) -> EventIds:
        return self.sealer.event_ids(claims)

    async def closed(self, server: str, claims: SessionClaims, principal: Principal) -> None:
        """The session ended (DELETE, or the upstream's 404): its place under the cap is free again."""
        await self.limits.session_closed(self.fingerprint(principal), server, claims.upstream_session_id)

    async def initialize(self, server: str, principal: Principal) -> SessionCreation:
        """Reserve a place for the session an initialize will create; 429 at the principal's cap.

        SECURITY.md: a cap on sessions per principal, enforced before the upstream creates one.
        """
        fingerprint = self.fingerprint(principal)
        await self.limits.reserve_session(fingerprint, self.clock())
        return SessionCreation(self, server, fingerprint)


class SessionCreation:
    """One initialize in flight: seals the upstream's session id, then settles the reserved place."""

    __slots__ = ("_fingerprint", "_gate", "_server", "claims", "event_ids", "opened")

    def __init__(self, gate: SessionGate, server: str, fingerprint: str) -> None:
        self._gate = gate
        self._server = server
        self._fingerprint = fingerprint
        self.opened: str | None = None  # the upstream session the initialize created
        self.event_ids: EventIds | None = None  # the new session's event ids, once it exists
        self.claims: SessionClaims | None = None  # the new session, once it exists

    async def seal(self, upstream_id: str) -> str:
        """The sealed id the client gets for the upstream's session id (called once the upstream answered)."""
        gate = self._gate
        created = SessionClaims(self._server, upstream_id, self._fingerprint, int(gate.clock()))
        self.event_ids = gate.sealer.event_ids(created)
        self.claims = created
        await gate.limits.session_opened(self._fingerprint, self._server, upstream_id, created.created)
        self.opened = upstream_id
        return gate.sealer.seal(created)

    async def settle(self, *, succeeded: bool) -> None:
        """Give the place back unless the initialize opened a session that works."""
        limits = self._gate.limits
        if self.opened is None:
            await limits.session_cancelled(self._fingerprint)  # no session came of it
        elif not succeeded:
            # An initialize that failed opens nothing usable.
            await limits.session_closed(self._fingerprint, self._server, self.opened)
