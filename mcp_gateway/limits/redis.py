"""Limits shared by every worker and replica: token buckets and session counts in Redis, one script per decision.

Each decision is one round trip (EVALSHA of a Lua script; redis-py falls back to EVAL once if the server
lost its script cache), and atomic because Redis runs a script without interleaving other commands.

Time: callers pass `now` from their own monotonic clock, which means nothing in another process. Scripts
read the Redis server's clock (`TIME`) instead, so every replica refills the same bucket on one time base
and a replica's clock drift cannot mint tokens. (Redis 5+ replicates a script's effects, not the script,
so reading `TIME` inside one is allowed and replicas stay consistent.) Session ages compare the server's
clock with the creation time sealed into the session id, which comes from the creating replica's wall
clock: skew between machines shifts a session's end by the skew, as it already does for `expired`.

Redis unreachable, slow or failing: every round trip is bounded by `redis_timeout_seconds`. A failed call
gets the outage answer and wakes a background ping; when that ping fails too the store is "down": calls stop
waiting on Redis (they fail at once) and the ping, once a second, brings it back up when Redis answers.
While down, `on_store_down = "deny"` refuses the decision with `LimitStoreUnavailable` (503 + Retry-After)
and `"allow"` lets it through unlimited; either way it is logged
on the transition, counted in `stats` and shown by `healthy` (so in `/metrics` and `/readyz`). Session
bookkeeping after the fact (opened, cancelled, closed) never refuses a call: a lost update expires on its own.

Keys (all under `redis_key_prefix`): `rl:<bucket key>` holds "tokens stamp" and expires once the bucket
would be full again (a missing bucket counts as full, as in memory); `sess:<principal>` is a sorted set of
"server:upstream id" scored by creation time; `resv:<principal>` holds initializes in flight, scored by
when they began, each expiring after `_RESERVATION_SECONDS` so a replica that died mid-initialize frees its
places. One decision names several keys, so this targets one Redis (with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mcp_gateway.config import GatewayConfig, RateLimit
from mcp_gateway.errors import LimitStoreUnavailable, RateLimited

__all__ = ["RedisLimitStore", "RedisLimitStats"]

logger = logging.getLogger("mcp_gateway.limits")

_PING_SECONDS: Final = 1.0
_RESERVATION_SECONDS: Final = 600.0  # an initialize in flight longer than this no longer holds a place
_RETRY_AFTER_DOWN: Final = 1

# ARGV[1]: '' → the server's clock, else the caller's `now` (tests). Then rate, burst per key.
# Mirrors MemoryRateLimiter.check step for step (same float arithmetic, same epsilon), so both stores give
# identical answers; state round-trips exactly through '%.17g'. Returns nil (allowed) or the wait as text
# (a Lua number would be truncated to an integer reply).
_TAKE: Final = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local debits = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local seen = false
  for _, d in ipairs(debits) do
    if d[1] == key then seen = true break end
  end
  if not seen then
    local rate = tonumber(ARGV[2 * i])
    local burst = tonumber(ARGV[2 * i + 1])
    local tokens, stamp
    local state = redis.call('GET', key)
    if not state then
      tokens, stamp = burst, now
    else
      local a, b = string.match(state, '^(%S+) (%S+)$')
      tokens, stamp = tonumber(a), tonumber(b)
      if now > stamp then
        tokens = tokens + (now - stamp) * rate
        stamp = now
      end
      if tokens > burst then tokens = burst end
    end
    if tokens < 1.0 - 1e-6 then
      local w = (1.0 - tokens) / rate
      if w > wait then wait = w end
    else
      debits[#debits + 1] = {key, tokens, stamp, rate, burst}
    end
  end
end
if wait > 0 then return string.format('%.17g', wait) end
for _, d in ipairs(debits) do
  local left = math.max(d[2] - 1.0, 0.0)
  local ttl = math.ceil((d[5] - left) / d[4] * 1000) + 1000
  redis.call('SET', d[1], string.format('%.17g %.17g', left, d[3]), 'PX', ttl)
end
return false
"""

# KEYS: sessions, reservations. ARGV: now ('' → server clock), max age, cap, reservation id.
_RESERVE: Final = f"""
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local max_age = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - max_age)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - {_RESERVATION_SECONDS})
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then return string.format('%.17g', math.max(1.0, tonumber(oldest[2]) + max_age - now)) end
  return '1'
end
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('PEXPIRE', KEYS[2], {int(_RESERVATION_SECONDS * 1000)})
return false
"""

# KEYS: sessions, reservations. ARGV: reservation id ('' → none), member, created, max age.
_OPENED: Final = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 1000))
return false
"""


@dataclass(slots=True)
class RedisLimitStats:
    """Counters for `/metrics`: what the store did while Redis answered and while it did not."""

    round_trips: int = 0
    pings: int = 0  # health pings answered or not
    failures: int = 0  # round trips that timed out or failed
    denied_while_down: int = 0  # decisions refused with 503 (on_store_down = "deny")
    allowed_while_down: int = 0  # decisions let through unlimited (on_store_down = "allow")


class RedisLimitStore:
    """`LimitStore` over one Redis: every worker and replica spends the same buckets and session caps."""

    def __init__(
        self,
        url: str,
        *,
        max_sessions_per_principal: int,
        session_max_age_seconds: float,
        on_store_down: Literal["deny", "allow"] = "deny",
        timeout_seconds: float = 0.5,
        key_prefix: str = "mcp-gateway:",
        time_source: Literal["server", "caller"] = "server",
        ping_seconds: float = _PING_SECONDS,
        max_connections: int = 64,
    ) -> None:
        """`time_source = "caller"` uses the `now` each call passes instead of Redis's clock: for tests that
        drive time by hand, and only meaningful when one process uses the store."""
        if max_sessions_per_principal < 1 or not session_max_age_seconds > 0:
            raise ValueError("max_sessions_per_principal and session_max_age_seconds must be positive")
        self.max_sessions_per_principal = max_sessions_per_principal
        self.session_max_age_seconds = session_max_age_seconds
        self.on_store_down = on_store_down
        self.timeout = timeout_seconds
        self.prefix = key_prefix
        self.time_source = time_source
        self.ping_seconds = ping_seconds
        self.stats = RedisLimitStats()
        # No retries inside the client: a failed round trip is answered now (deny or allow), and the
        # background ping decides when Redis is back, so a dead Redis never multiplies a call's latency.
        # At most `max_connections` per process: concurrent decisions queue for a connection (within the
        # same timeout) instead of opening one each, which under a burst costs more than the queueing.
        # Reads are bounded by `_bounded` (one timeout for the whole call), not a second socket timeout.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        # The health ping has a connection of its own, so that it measures Redis, not the queue for the pool.
        self._pinger: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=1,
                timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                socket_timeout=None,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        )
        self._take = self._client.register_script(_TAKE)
        self._reserve = self._client.register_script(_RESERVE)
        self._opened = self._client.register_script(_OPENED)
        self._state: Literal["unknown", "up", "down"] = "unknown"
        self._watch: asyncio.Task[None] | None = None
        self._check_now = asyncio.Event()  # a call failed: ping now rather than at the next tick
        # This process's initializes in flight per principal, so that opening or cancelling one frees
        # exactly the place it reserved (None: reserved while Redis was down, nothing to free).
        self._reservations: dict[str, deque[str | None]] = {}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> RedisLimitStore:
        limits = config.rate_limits
        assert limits.redis_url is not None
        return cls(
            limits.redis_url,
            max_sessions_per_principal=config.max_sessions_per_principal,
            session_max_age_seconds=config.session_max_age_seconds,
            on_store_down=limits.on_store_down,
            timeout_seconds=limits.redis_timeout_seconds,
            key_prefix=limits.redis_key_prefix,
        )

    # -- LimitStore ---------------------------------------------------------------------------------

    async def take(self, keys: Sequence[tuple[str, RateLimit]], now: float) -> float | None:
        if not keys:
            return None
        args: list[str | int] = [self._now(now)]
        for _, limit in keys:
            args += [repr(float(limit.rate)), limit.burst]
        ok, reply = await self._run(self._take, [self.prefix + "rl:" + key for key, _ in keys], args)
        if not ok:
            self._down("rate limit")
            return None
        return None if reply is None else float(reply)

    async def reserve_session(self, principal: str, now: float) -> None:
        reservation = secrets.token_hex(8)
        args: list[str | int] = [
            self._now(now),
            repr(float(self.session_max_age_seconds)),
            self.max_sessions_per_principal,
            reservation,
        ]
        ok, reply = await self._run(self._reserve, self._session_keys(principal), args)
        if not ok:
            self._down("session cap")
            self._reservations.setdefault(principal, deque()).append(None)
            return
        if reply is not None:
            raise RateLimited(
                f"Too Many Requests: this principal already has {self.max_sessions_per_principal} open sessions "
                "(max_sessions_per_principal); end one with DELETE before opening another",
                retry_after=float(reply),
            )
        self._reservations.setdefault(principal, deque()).append(reservation)

    async def session_opened(self, principal: str, server: str, upstream_session_id: str, created: float) -> None:
        reservation = self._release(principal) or ""
        member = f"{server}:{upstream_session_id}"
        args: list[str | int] = [reservation, member, repr(float(created)), repr(float(self.session_max_age_seconds))]
        await self._run(self._opened, self._session_keys(principal), args)

    async def session_cancelled(self, principal: str) -> None:
        reservation = self._release(principal)
        if reservation is not None:
            await self._bounded(self._client.zrem(self.prefix + "resv:" + principal, reservation))

    async def session_closed(self, principal: str, server: str, upstream_session_id: str) -> None:
        await self._bounded(self._client.zrem(self.prefix + "sess:" + principal, f"{server}:{upstream_session_id}"))

    @property
    def healthy(self) -> bool:
        self._ensure_watch()
        return self._state != "down"

    async def aclose(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        await self._client.aclose()
        await self._pinger.aclose()

    # -- round trips --------------------------------------------------------------------------------

    def _now(self, now: float) -> str:
        return "" if self.time_source == "server" else repr(float(now))

    def _session_keys(self, principal: str) -> list[str]:
        return [self.prefix + "sess:" + principal, self.prefix + "resv:" + principal]

    def _release(self, principal: str) -> str | None:
        pending = self._reservations.get(principal)
        if not pending:
            return None
        reservation = pending.popleft()
        if not pending:
            del self._reservations[principal]
        return reservation

    async def _run(self, script: Any, keys: list[str], args: list[str | int]) -> tuple[bool, Any]:
        """(True, the script's reply) or (False, None) when Redis is down or the round trip failed."""
        return await self._bounded(script(keys=keys, args=args))

    async def _bounded(self, call: Any) -> tuple[bool, Any]:
        self._ensure_watch()
        if self._state == "down":
            call.close()  # never awaited: Redis is down, so nobody waits on it
            return False, None
        self.stats.round_trips += 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await call
        except (RedisError, OSError, TimeoutError):
            # This call gets the outage answer. The store is "down" only once a ping fails too, so that one
            # slow answer (a loaded event loop, a Redis fork for a snapshot) does not refuse every call.
            self.stats.failures += 1
            self._check_now.set()
            return False, None
        if self._state == "unknown":
            self._mark("up")
        return True, reply

    def _down(self, what: str) -> None:
        if self.on_store_down == "allow":
            self.stats.allowed_while_down += 1
            return
        self.stats.denied_while_down += 1
        raise LimitStoreUnavailable(
            f"Service Unavailable: the shared limit store cannot check this call's {what} now; nothing was forwarded",
            retry_after=_RETRY_AFTER_DOWN,
        )

    def _mark(self, state: Literal["up", "down"], exc: BaseException | None = None) -> None:
        if state == self._state:
            return
        if state == "down":
            # The URL may hold a password: never logged. One line per transition, not per call.
            logger.error(
                "limit store (Redis) unreachable (%s); on_store_down = %r: %s",
                type(exc).__name__,
                self.on_store_down,
                "calls are refused with 503" if self.on_store_down == "deny" else "calls pass UNLIMITED",
            )
        elif self._state == "down":
            logger.warning("limit store (Redis) reachable again; limits are enforced")
        self._state = state

    def _ensure_watch(self) -> None:
        if self._watch is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._watch = loop.create_task(self._ping_forever())

    async def _ping_forever(self) -> None:
        # Decides "down" (after a failed call, or on its own schedule, so an outage shows without traffic)
        # and ends it: calls made while down do not touch Redis.
        while True:
            self.stats.pings += 1
            self._check_now.clear()  # before the ping: a call failing during it wakes the next one
            try:
                async with asyncio.timeout(self.timeout):
                    await self._pinger.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                self._mark("down", exc)
            else:
                self._mark("up")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ping_seconds):
                    await self._check_now.wait()
