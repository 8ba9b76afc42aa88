"""Limits kept in this process: token buckets and the session ledger, answered without awaiting."""

from __future__ import annotations

from collections.abc import Sequence

from mcp_gateway.config import RateLimit
from mcp_gateway.limits.sessions import SessionLedger
from mcp_gateway.policy.ratelimit import MemoryRateLimiter


class MemoryLimitStore:
    """One process's buckets and session counts; atomic because nothing here awaits.

    Behind several workers or replicas each process counts alone, so an agent may spend its rate
    limit once per process: a fleet configures a shared store instead.
    """

    __slots__ = ("buckets", "sessions")

    def __init__(
        self,
        max_sessions_per_principal: int,
        session_max_age_seconds: float,
        *,
        buckets: MemoryRateLimiter | None = None,
    ) -> None:
        self.buckets = buckets or MemoryRateLimiter()
        self.sessions = SessionLedger(max_sessions_per_principal, session_max_age_seconds)

    async def take(self, keys: Sequence[tuple[str, RateLimit]], now: float) -> float | None:
        return self.buckets.check(keys, now)

    async def reserve_session(self, principal: str, now: float) -> None:
        self.sessions.reserve(principal, now)

    async def session_opened(self, principal: str, server: str, upstream_session_id: str, created: float) -> None:
        self.sessions.opened(principal, server, upstream_session_id, created)

    async def session_cancelled(self, principal: str) -> None:
        self.sessions.cancel(principal)

    async def session_closed(self, principal: str, server: str, upstream_session_id: str) -> None:
        self.sessions.closed(principal, server, upstream_session_id)

    @property
    def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
