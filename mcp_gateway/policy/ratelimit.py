"""Rate limits: token buckets per agent, per agent and tool, per delegating user, debited all-or-nothing.

Buckets are per server: keys name the allowlist route (`agent:github:alice-bot`), because a server's
`[rate_limits]` overrides the gateway-wide table as a whole (`effective_rate_limits`), a bucket must
refill at one rate, and one busy upstream should not starve an agent's use of the others. The price:
an agent that uses N servers may make N times the gateway-wide rate in total.

Time is passed in (`now`, seconds on a monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Protocol

from mcp_gateway.config import RateLimit, RateLimits, ServerEntry

__all__ = ["MemoryRateLimiter", "RateLimiter", "effective_rate_limits", "rate_limit_keys"]

# Float refill arithmetic can land a hair under a whole token at exactly the advertised retry time;
# forgiving a millionth of a token per call keeps "retry after X" honest at a negligible cost.
_EPSILON: Final = 1e-6


class RateLimiter(Protocol):
    """The seam for bucket storage (in memory here; a shared store behind the same contract)."""

    def check(self, keys: Sequence[tuple[str, RateLimit]], now: float) -> float | None:
        """None: allowed, and one token taken from every bucket at once. Otherwise the seconds until
        every bucket would have a token again, and no bucket touched."""
        ...


class MemoryRateLimiter:
    """Token buckets in one process, at most `max_buckets` of them.

    Memory is bounded by evicting the bucket debited longest ago, which is the one that has had the
    longest to refill. A missing bucket counts as full, so evicting a bucket that had refilled is
    harmless; evicting one that had not gives its owner up to `burst` extra calls. That can happen only
    when more than `max_buckets` keys were debited within one refill period, i.e. under a flood of
    distinct principals; refusing new keys instead would let such a flood lock out every newcomer.
    Keep tool names bounded by checking limits after the policy decision (unknown tools never get a
    bucket).

    Refused checks write nothing, so a throttled client hammering away neither refreshes its bucket's
    place in the eviction order nor creates buckets. `check` never awaits, so it is atomic within one
    event loop; it is not meant to be shared between threads.
    """

    __slots__ = ("_buckets", "max_buckets")

    def __init__(self, *, max_buckets: int = 100_000) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self.max_buckets = max_buckets
        # key → (tokens after the last debit, time of the last debit); oldest debit first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, keys: Sequence[tuple[str, RateLimit]], now: float) -> float | None:
        buckets = self._buckets
        debits: list[tuple[str, float, float]] = []
        wait = 0.0
        for key, limit in keys:
            if any(key == seen for seen, _, _ in debits):
                continue  # the same bucket named twice is charged once
            state = buckets.get(key)
            if state is None:
                tokens, stamp = float(limit.burst), now
            else:
                tokens, stamp = state
                if now > stamp:
                    tokens += (now - stamp) * limit.rate
                    stamp = now
                # A clock that steps back refills nothing; a burst lowered by a reload caps what is kept.
                tokens = min(tokens, float(limit.burst))
            if tokens < 1.0 - _EPSILON:
                wait = max(wait, (1.0 - tokens) / limit.rate)
            else:
                debits.append((key, tokens, stamp))
        if wait > 0.0:
            return wait
        for key, tokens, stamp in debits:
            buckets[key] = (max(tokens - 1.0, 0.0), stamp)
            buckets.move_to_end(key)
        while len(buckets) > self.max_buckets:
            buckets.popitem(last=False)
        return None


def _part(value: str) -> str:
    # Agent ids, users and tool names may contain ':'; escaping keeps "a:b" + "c" apart from "a" + "b:c",
    # which would otherwise share (and let one drain) a bucket.
    if "%" in value or ":" in value:
        return value.replace("%", "%25").replace(":", "%3A")
    return value


def rate_limit_keys(
    limits: RateLimits, *, agent_id: str, tool: str | None, user: str | None, server: str
) -> list[tuple[str, RateLimit]]:
    """The buckets one request draws from: `agent:<server>:<agent>` always, `agent_tool:<server>:<agent>:<tool>`
    for tool calls, `user:<server>:<user>` when a user delegated; each only if its limit is configured."""
    srv = _part(server)
    agent = _part(agent_id)
    keys: list[tuple[str, RateLimit]] = []
    if limits.per_agent is not None:
        keys.append((f"agent:{srv}:{agent}", limits.per_agent))
    if limits.per_agent_tool is not None and tool is not None:
        keys.append((f"agent_tool:{srv}:{agent}:{_part(tool)}", limits.per_agent_tool))
    if limits.per_user is not None and user is not None:
        keys.append((f"user:{srv}:{_part(user)}", limits.per_user))
    return keys


def effective_rate_limits(gateway: RateLimits, entry: ServerEntry) -> RateLimits:
    """A server's `[rate_limits]` replaces the gateway-wide table as a whole (unset fields are unlimited)."""
    return entry.rate_limits if entry.rate_limits is not None else gateway
