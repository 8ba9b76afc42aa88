from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import RateLimit, RateLimits
from mcp_gateway.policy import MemoryRateLimiter, RateLimiter, effective_rate_limits, rate_limit_keys

from ._build import entry

T0 = 1000.0


def _limit(rate: float, burst: int) -> RateLimit:
    return RateLimit(rate=rate, burst=burst)


@pytest.mark.parametrize(
    ("rate", "burst", "retry_after"),
    [(1.0, 1, 1.0), (2.0, 5, 0.5), (4.0, 3, 0.25), (0.5, 2, 2.0), (0.125, 10, 8.0), (1000.0, 1, 0.001)],
)
def test_a_burst_is_allowed_then_refused_with_the_exact_time_one_token_takes(
    rate: float, burst: int, retry_after: float
) -> None:
    limiter = MemoryRateLimiter()
    key = [("agent:s:a", _limit(rate, burst))]
    assert [limiter.check(key, T0) for _ in range(burst)] == [None] * burst
    assert limiter.check(key, T0) == pytest.approx(retry_after, rel=1e-12)
    assert limiter.check(key, T0 + retry_after) is None  # retrying when told to succeeds
    assert limiter.check(key, T0 + retry_after) == pytest.approx(retry_after, rel=1e-6)


def test_a_partly_refilled_bucket_reports_only_the_remaining_wait() -> None:
    limiter = MemoryRateLimiter()
    key = [("agent:s:a", _limit(4.0, 1))]
    assert limiter.check(key, T0) is None
    wait = limiter.check(key, T0 + 0.1)
    assert wait == pytest.approx(0.15)
    assert wait is not None and limiter.check(key, T0 + 0.1 + wait) is None


def test_buckets_refill_over_injected_time_but_never_beyond_the_burst() -> None:
    limiter = MemoryRateLimiter()
    key = [("agent:s:a", _limit(2.0, 3))]
    for _ in range(3):
        assert limiter.check(key, T0) is None
    assert limiter.check(key, T0 + 1.0) is None  # 1 s at 2/s: two tokens back
    assert limiter.check(key, T0 + 1.0) is None
    assert limiter.check(key, T0 + 1.0) is not None
    later = T0 + 3600.0
    assert [limiter.check(key, later) for _ in range(4)][:3] == [None, None, None]
    assert limiter.check(key, later) is not None


def test_one_agent_throttled_leaves_another_untouched() -> None:
    limiter = MemoryRateLimiter()
    limits = RateLimits(per_agent=_limit(1.0, 2))
    alice = rate_limit_keys(limits, agent_id="alice", tool=None, user=None, server="s")
    bob = rate_limit_keys(limits, agent_id="bob", tool=None, user=None, server="s")
    assert limiter.check(alice, T0) is None
    assert limiter.check(alice, T0) is None
    assert limiter.check(alice, T0) == 1.0
    assert limiter.check(bob, T0) is None
    assert limiter.check(bob, T0) is None


def test_a_refused_check_debits_no_bucket() -> None:
    limiter = MemoryRateLimiter()
    roomy = ("agent:s:a", _limit(1.0, 3))
    tight = ("agent_tool:s:a:echo", _limit(1.0, 1))
    assert limiter.check([roomy, tight], T0) is None  # roomy 2 left, tight 0
    for _ in range(5):
        assert limiter.check([roomy, tight], T0) == 1.0  # refused: tight is empty
    # roomy still has exactly its two tokens: the five refusals took none
    assert limiter.check([roomy], T0) is None
    assert limiter.check([roomy], T0) is None
    assert limiter.check([roomy], T0) == 1.0


def test_an_allowed_check_debits_every_bucket() -> None:
    limiter = MemoryRateLimiter()
    first = ("agent:s:a", _limit(1.0, 2))
    second = ("user:s:u", _limit(1.0, 2))
    assert limiter.check([first, second], T0) is None
    assert limiter.check([first], T0) is None
    assert limiter.check([first], T0) == 1.0
    assert limiter.check([second], T0) is None
    assert limiter.check([second], T0) == 1.0


def test_the_retry_time_is_when_every_bucket_has_a_token_again() -> None:
    limiter = MemoryRateLimiter()
    fast = ("agent:s:a", _limit(10.0, 1))
    slow = ("user:s:u", _limit(0.25, 1))
    assert limiter.check([fast, slow], T0) is None
    assert limiter.check([fast, slow], T0) == 4.0
    assert limiter.check([fast, slow], T0 + 0.1) == pytest.approx(3.9)


def test_the_same_bucket_named_twice_is_charged_once() -> None:
    limiter = MemoryRateLimiter()
    key = ("agent:s:a", _limit(1.0, 2))
    assert limiter.check([key, key], T0) is None
    assert limiter.check([key], T0) is None
    assert limiter.check([key], T0) == 1.0


def test_no_keys_means_no_limit() -> None:
    assert MemoryRateLimiter().check([], T0) is None


def test_a_clock_stepping_back_refills_nothing() -> None:
    limiter = MemoryRateLimiter()
    key = [("agent:s:a", _limit(1.0, 1))]
    assert limiter.check(key, T0) is None
    assert limiter.check(key, T0 - 50.0) == 1.0
    assert limiter.check(key, T0 + 0.5) == pytest.approx(0.5)


def test_a_burst_lowered_by_a_reload_caps_what_a_bucket_keeps() -> None:
    limiter = MemoryRateLimiter()
    assert limiter.check([("agent:s:a", _limit(1.0, 10))], T0) is None  # 9 left
    small = [("agent:s:a", _limit(1.0, 2))]
    assert limiter.check(small, T0) is None
    assert limiter.check(small, T0) is None
    assert limiter.check(small, T0) == 1.0


def test_memory_is_bounded_by_evicting_the_bucket_debited_longest_ago() -> None:
    limiter = MemoryRateLimiter(max_buckets=3)
    limit = _limit(1.0, 1)
    for i in range(10):
        assert limiter.check([(f"agent:s:{i}", limit)], T0 + i * 0.01) is None
    assert len(limiter) == 3
    # the three most recent are still drained; the evicted ones start full again
    for i in (7, 8, 9):
        assert limiter.check([(f"agent:s:{i}", limit)], T0 + 0.1) is not None
    assert limiter.check([("agent:s:0", limit)], T0 + 0.1) is None


def test_refused_checks_create_no_buckets() -> None:
    limiter = MemoryRateLimiter()
    tight = ("agent:s:a", _limit(1.0, 1))
    assert limiter.check([tight], T0) is None
    for i in range(100):
        assert limiter.check([tight, (f"agent_tool:s:a:{i}", _limit(1.0, 5))], T0) is not None
    assert len(limiter) == 1


def test_the_bucket_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buckets"):
        MemoryRateLimiter(max_buckets=0)


def test_the_memory_limiter_satisfies_the_protocol() -> None:
    limiter: RateLimiter = MemoryRateLimiter()
    assert limiter.check([], 0.0) is None


@given(
    rate=st.sampled_from([0.1, 0.5, 1.0, 3.0, 7.5, 100.0]),
    burst=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0, allow_nan=False), min_size=1, max_size=60),
)
def test_no_window_ever_admits_more_than_burst_plus_refill(rate: float, burst: int, gaps: list[float]) -> None:
    limiter = MemoryRateLimiter()
    key = [("agent:s:a", _limit(rate, burst))]
    now = T0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        wait = limiter.check(key, now)
        if wait is None:
            admitted.append(now)
        else:
            assert wait > 0
            assert limiter.check(key, now + wait) is None  # the advertised wait is enough...
            admitted.append(now + wait)
            now += wait
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + (admitted[j] - start) * rate + 1e-4


# -- keys ------------------------------------------------------------------------------------------

ALL = RateLimits(per_agent=_limit(5, 10), per_agent_tool=_limit(1, 2), per_user=_limit(20, 40))


@pytest.mark.parametrize(
    ("limits", "tool", "user", "keys"),
    [
        (ALL, "echo", "u1", ["agent:gh:bot", "agent_tool:gh:bot:echo", "user:gh:u1"]),
        (ALL, None, "u1", ["agent:gh:bot", "user:gh:u1"]),
        (ALL, "echo", None, ["agent:gh:bot", "agent_tool:gh:bot:echo"]),
        (RateLimits(per_user=_limit(1, 1)), "echo", "u1", ["user:gh:u1"]),
        (RateLimits(), "echo", "u1", []),
    ],
)
def test_keys_name_the_server_the_agent_the_tool_and_the_user(
    limits: RateLimits, tool: str | None, user: str | None, keys: list[str]
) -> None:
    produced = rate_limit_keys(limits, agent_id="bot", tool=tool, user=user, server="gh")
    assert [key for key, _ in produced] == keys
    kinds = {"agent": limits.per_agent, "agent_tool": limits.per_agent_tool, "user": limits.per_user}
    assert all(limit == kinds[key.split(":")[0]] for key, limit in produced)


def test_colons_in_ids_cannot_make_two_principals_share_a_bucket() -> None:
    one = rate_limit_keys(ALL, agent_id="a:b", tool="c", user=None, server="s")
    two = rate_limit_keys(ALL, agent_id="a", tool="b:c", user=None, server="s")
    assert one[1][0] == "agent_tool:s:a%3Ab:c"
    assert two[1][0] == "agent_tool:s:a:b%3Ac"
    assert rate_limit_keys(ALL, agent_id="a%3Ab", tool=None, user=None, server="s")[0][0] == "agent:s:a%253Ab"


def test_the_same_agent_has_separate_buckets_per_server() -> None:
    limiter = MemoryRateLimiter()
    limits = RateLimits(per_agent=_limit(1, 1))
    assert limiter.check(rate_limit_keys(limits, agent_id="bot", tool=None, user=None, server="one"), T0) is None
    assert limiter.check(rate_limit_keys(limits, agent_id="bot", tool=None, user=None, server="one"), T0) == 1.0
    assert limiter.check(rate_limit_keys(limits, agent_id="bot", tool=None, user=None, server="two"), T0) is None


def test_a_server_rate_limit_table_replaces_the_gateway_wide_one() -> None:
    gateway = RateLimits(per_agent=_limit(5, 10), per_user=_limit(1, 1))
    assert effective_rate_limits(gateway, entry()) == gateway
    own = entry(rate_limits={"per_agent": {"rate": 1, "burst": 1}})
    assert effective_rate_limits(gateway, own) == RateLimits(per_agent=_limit(1, 1))
