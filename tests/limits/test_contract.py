"""Every limit store keeps the same promises: the memory store's bucket and session tests, run against each.

The Redis store runs here with `time_source = "caller"`, so that time is driven by hand exactly as for the
memory store; test_redis.py covers the server's clock, several clients and outages.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_gateway.config import RateLimit, RateLimits
from mcp_gateway.errors import RateLimited
from mcp_gateway.limits import LimitStore, MemoryLimitStore
from mcp_gateway.limits.redis import RedisLimitStore
from mcp_gateway.policy import rate_limit_keys

from ._redis import REDIS_URL, key_prefix, keys_under

pytestmark = pytest.mark.anyio

T0 = 1000.0
ALICE = "a" * 64
BOB = "b" * 64


@dataclass
class Store:
    store: LimitStore
    prefix: str | None  # the Redis store's key prefix

    async def bucket_count(self) -> int:
        if isinstance(self.store, MemoryLimitStore):
            return len(self.store.buckets)
        assert self.prefix is not None
        return len(await keys_under(f"{self.prefix}rl:"))


MakeStore = Callable[..., Store]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """A factory: `make(max_sessions, max_age)` gives a fresh store of the parametrized kind."""
    if request.param == "memory":
        yield lambda max_sessions=10, max_age=100.0: Store(MemoryLimitStore(max_sessions, max_age), None)
        return
    opened: list[RedisLimitStore] = []
    counter = itertools.count()
    async with key_prefix() as prefix:

        def redis_store(max_sessions: int = 10, max_age: float = 100.0) -> Store:
            own = f"{prefix}{next(counter)}:"
            store = RedisLimitStore(
                REDIS_URL,
                max_sessions_per_principal=max_sessions,
                session_max_age_seconds=max_age,
                key_prefix=own,
                time_source="caller",
                timeout_seconds=2.0,
            )
            opened.append(store)
            return Store(store, own)

        try:
            yield redis_store
        finally:
            for store in opened:
                await store.aclose()


def _limit(rate: float, burst: int) -> RateLimit:
    return RateLimit(rate=rate, burst=burst)


# -- buckets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "retry_after"),
    [(1.0, 1, 1.0), (2.0, 5, 0.5), (4.0, 3, 0.25), (0.5, 2, 2.0), (0.125, 10, 8.0), (1000.0, 1, 0.001)],
)
async def test_a_burst_is_allowed_then_refused_with_the_exact_time_one_token_takes(
    make: MakeStore, rate: float, burst: int, retry_after: float
) -> None:
    limits = make().store
    key = [("agent:s:a", _limit(rate, burst))]
    assert [await limits.take(key, T0) for _ in range(burst)] == [None] * burst
    assert await limits.take(key, T0) == pytest.approx(retry_after, rel=1e-12)
    assert await limits.take(key, T0 + retry_after) is None  # retrying when told to succeeds
    assert await limits.take(key, T0 + retry_after) == pytest.approx(retry_after, rel=1e-6)


async def test_a_partly_refilled_bucket_reports_only_the_remaining_wait(make: MakeStore) -> None:
    limits = make().store
    key = [("agent:s:a", _limit(4.0, 1))]
    assert await limits.take(key, T0) is None
    wait = await limits.take(key, T0 + 0.1)
    assert wait == pytest.approx(0.15)
    assert wait is not None and await limits.take(key, T0 + 0.1 + wait) is None


async def test_buckets_refill_over_injected_time_but_never_beyond_the_burst(make: MakeStore) -> None:
    limits = make().store
    key = [("agent:s:a", _limit(2.0, 3))]
    for _ in range(3):
        assert await limits.take(key, T0) is None
    assert await limits.take(key, T0 + 1.0) is None  # 1 s at 2/s: two tokens back
    assert await limits.take(key, T0 + 1.0) is None
    assert await limits.take(key, T0 + 1.0) is not None
    later = T0 + 3600.0
    assert [await limits.take(key, later) for _ in range(3)] == [None, None, None]
    assert await limits.take(key, later) is not None


async def test_one_agent_throttled_leaves_another_untouched(make: MakeStore) -> None:
    limits = make().store
    table = RateLimits(per_agent=_limit(1.0, 2))
    alice = rate_limit_keys(table, agent_id="alice", tool=None, user=None, server="s")
    bob = rate_limit_keys(table, agent_id="bob", tool=None, user=None, server="s")
    assert await limits.take(alice, T0) is None
    assert await limits.take(alice, T0) is None
    assert await limits.take(alice, T0) == 1.0
    assert await limits.take(bob, T0) is None
    assert await limits.take(bob, T0) is None


async def test_a_refused_take_debits_no_bucket(make: MakeStore) -> None:
    limits = make().store
    roomy = ("agent:s:a", _limit(1.0, 3))
    tight = ("agent_tool:s:a:echo", _limit(1.0, 1))
    assert await limits.take([roomy, tight], T0) is None  # roomy 2 left, tight 0
    for _ in range(5):
        assert await limits.take([roomy, tight], T0) == 1.0  # refused: tight is empty
    assert await limits.take([roomy], T0) is None  # roomy still has exactly its two tokens
    assert await limits.take([roomy], T0) is None
    assert await limits.take([roomy], T0) == 1.0


async def test_an_allowed_take_debits_every_bucket(make: MakeStore) -> None:
    limits = make().store
    first = ("agent:s:a", _limit(1.0, 2))
    second = ("user:s:u", _limit(1.0, 2))
    assert await limits.take([first, second], T0) is None
    assert await limits.take([first], T0) is None
    assert await limits.take([first], T0) == 1.0
    assert await limits.take([second], T0) is None
    assert await limits.take([second], T0) == 1.0


async def test_the_retry_time_is_when_every_bucket_has_a_token_again(make: MakeStore) -> None:
    limits = make().store
    fast = ("agent:s:a", _limit(10.0, 1))
    slow = ("user:s:u", _limit(0.25, 1))
    assert await limits.take([fast, slow], T0) is None
    assert await limits.take([fast, slow], T0) == 4.0
    assert await limits.take([fast, slow], T0 + 0.1) == pytest.approx(3.9)


async def test_the_same_bucket_named_twice_is_charged_once(make: MakeStore) -> None:
    limits = make().store
    key = ("agent:s:a", _limit(1.0, 2))
    assert await limits.take([key, key], T0) is None
    assert await limits.take([key], T0) is None
    assert await limits.take([key], T0) == 1.0


async def test_no_keys_means_no_limit(make: MakeStore) -> None:
    assert await make().store.take([], T0) is None


async def test_a_clock_stepping_back_refills_nothing(make: MakeStore) -> None:
    limits = make().store
    key = [("agent:s:a", _limit(1.0, 1))]
    assert await limits.take(key, T0) is None
    assert await limits.take(key, T0 - 50.0) == 1.0
    assert await limits.take(key, T0 + 0.5) == pytest.approx(0.5)


async def test_a_burst_lowered_by_a_reload_caps_what_a_bucket_keeps(make: MakeStore) -> None:
    limits = make().store
    assert await limits.take([("agent:s:a", _limit(1.0, 10))], T0) is None  # 9 left
    small = [("agent:s:a", _limit(1.0, 2))]
    assert await limits.take(small, T0) is None
    assert await limits.take(small, T0) is None
    assert await limits.take(small, T0) == 1.0


async def test_refused_takes_create_no_buckets(make: MakeStore) -> None:
    store = make()
    tight = ("agent:s:a", _limit(1.0, 1))
    assert await store.store.take([tight], T0) is None
    for i in range(30):
        assert await store.store.take([tight, (f"agent_tool:s:a:{i}", _limit(1.0, 5))], T0) is not None
    assert await store.bucket_count() == 1


async def test_the_same_agent_has_separate_buckets_per_server(make: MakeStore) -> None:
    limits = make().store
    table = RateLimits(per_agent=_limit(1, 1))
    one = rate_limit_keys(table, agent_id="bot", tool=None, user=None, server="one")
    assert await limits.take(one, T0) is None
    assert await limits.take(one, T0) == 1.0
    assert await limits.take(rate_limit_keys(table, agent_id="bot", tool=None, user=None, server="two"), T0) is None


_bucket_names = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.sampled_from([0.1, 0.5, 1.0, 3.0, 7.5, 100.0]),
    burst=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0, allow_nan=False), min_size=1, max_size=30),
)
async def test_no_window_ever_admits_more_than_burst_plus_refill(
    make: MakeStore, rate: float, burst: int, gaps: list[float]
) -> None:
    limits = make().store
    key = [(f"agent:s:{next(_bucket_names)}", _limit(rate, burst))]  # a fresh bucket per example
    now = T0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        wait = await limits.take(key, now)
        if wait is None:
            admitted.append(now)
        else:
            assert wait > 0
            assert await limits.take(key, now + wait) is None  # the advertised wait is enough
            admitted.append(now + wait)
            now += wait
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + (admitted[j] - start) * rate + 1e-4


# -- sessions per principal --------------------------------------------------------------------------


async def test_a_session_over_the_cap_is_refused_with_retry_after_the_oldest_expires(make: MakeStore) -> None:
    limits = make(2, 100.0).store
    for n, created in enumerate((10.0, 20.0)):
        await limits.reserve_session(ALICE, created)
        await limits.session_opened(ALICE, "everything", f"s{n}", created)
    with pytest.raises(RateLimited) as refused:
        await limits.reserve_session(ALICE, 30.0)
    assert refused.value.retry_after == 80.0  # the session created at 10 expires at 110
    assert ("retry-after", "80") in refused.value.headers
    assert "max_sessions_per_principal" in refused.value.message
    await limits.reserve_session(BOB, 30.0)  # the cap is per principal


async def test_initializes_in_flight_count_so_concurrent_ones_cannot_overshoot(make: MakeStore) -> None:
    limits = make(2, 100.0).store
    await limits.reserve_session(ALICE, 0.0)
    await limits.reserve_session(ALICE, 0.0)
    with pytest.raises(RateLimited) as refused:
        await limits.reserve_session(ALICE, 0.0)
    assert refused.value.retry_after == 1.0
    await limits.session_cancelled(ALICE)  # one initialize created no session
    await limits.reserve_session(ALICE, 0.0)
    with pytest.raises(RateLimited):
        await limits.reserve_session(ALICE, 0.0)


async def test_a_place_is_free_again_when_a_session_ends_or_expires(make: MakeStore) -> None:
    limits = make(1, 100.0).store
    await limits.reserve_session(ALICE, 0.0)
    await limits.session_opened(ALICE, "everything", "s1", 0.0)
    await limits.session_closed(ALICE, "everything", "s1")
    await limits.reserve_session(ALICE, 1.0)
    await limits.session_opened(ALICE, "everything", "s2", 1.0)
    with pytest.raises(RateLimited):
        await limits.reserve_session(ALICE, 100.0)
    await limits.reserve_session(ALICE, 101.0)  # s2 is 100 s old: expired, no longer counted


async def test_closing_or_cancelling_what_was_never_opened_is_harmless(make: MakeStore) -> None:
    limits = make(1, 100.0).store
    await limits.session_closed(ALICE, "everything", "never-opened")
    await limits.session_cancelled(ALICE)
    await limits.reserve_session(ALICE, 0.0)
    with pytest.raises(RateLimited):
        await limits.reserve_session(ALICE, 0.0)
    assert limits.healthy
