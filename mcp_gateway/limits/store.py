"""The limit-store seam: token buckets and session counters, as the request pipeline uses them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mcp_gateway.config import GatewayConfig, RateLimit


class LimitStore(Protocol):
    """Where rate-limit buckets and session counts live (this process today; a shared store next).

    Every method may await, so a store can sit across a network; each call is one atomic decision.
    Principals are named by their session fingerprint (`proxy.sessions.principal_fingerprint`).
    """

    async def take(self, keys: Sequence[tuple[str, RateLimit]], now: float) -> float | None:
        """None: allowed, one token taken from every bucket at once. Otherwise the seconds until every
        bucket would have a token again, and no bucket touched. `now` is a monotonic clock."""
        ...

    async def reserve_session(self, principal: str, now: float) -> None:
        """Hold a place for a session about to be created; raise `RateLimited` at the principal's cap."""
        ...

    async def session_opened(self, principal: str, server: str, upstream_session_id: str, created: float) -> None:
        """The reserved place is now this session."""
        ...

    async def session_cancelled(self, principal: str) -> None:
        """The initialize created no session: give the reserved place back."""
        ...

    async def session_closed(self, principal: str, server: str, upstream_session_id: str) -> None:
        """The session ended (DELETE, expiry, the upstream's 404): its place is free."""
        ...

    @property
    def healthy(self) -> bool: ...

    async def aclose(self) -> None: ...


def build_limit_store(config: GatewayConfig) -> LimitStore:
    """The store `config` selects; in-process counters unless a shared store is configured."""
    from mcp_gateway.limits.memory import MemoryLimitStore

    if config.rate_limits.redis_url is not None:
        from mcp_gateway.limits.redis import RedisLimitStore

        return RedisLimitStore.from_config(config)
    return MemoryLimitStore(config.max_sessions_per_principal, config.session_max_age_seconds)
