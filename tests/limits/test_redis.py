"""The Redis limit store across clients and outages: shared buckets and caps, atomic decisions, deny or allow
while Redis is down, and healing when it returns. Runs against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis

from mcp_gateway.config import RateLimit
from mcp_gateway.errors import LimitStoreUnavailable, RateLimited
from mcp_gateway.limits import build_limit_store
from mcp_gateway.limits.redis import RedisLimitStore
from tests._mcp import initialize_body, modern_headers, post_headers
from tests._stack import gateway_stack
from tests.proxy._support import json_error, modern_call_body

from ._redis import REDIS_URL, RedisDoor, closed_port, key_prefix, keys_under

pytestmark = pytest.mark.anyio


async def _until_down(store: RedisLimitStore) -> None:
    """A failed call wakes the store's ping; the store is down once that ping fails too."""
    with anyio.fail_after(5):
        while store.healthy:
            await anyio.sleep(0.01)


ALICE = "a" * 64
BUCKET = [("agent:s:alice-bot", RateLimit(rate=0.001, burst=5))]  # no token comes back within a test


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with key_prefix() as own:
        yield own


@pytest.fixture
async def stores() -> AsyncIterator[Callable[..., RedisLimitStore]]:
    """Builds Redis stores (closed at the end of the test)."""
    made: list[RedisLimitStore] = []

    def make(url: str = REDIS_URL, **options: Any) -> RedisLimitStore:
        options.setdefault("max_sessions_per_principal", 10)
        options.setdefault("session_max_age_seconds", 100.0)
        options.setdefault("timeout_seconds", 2.0)
        store = RedisLimitStore(url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def test_two_clients_spending_one_bucket_at_once_get_exactly_burst_calls(
    prefix: str, stores: Callable[..., RedisLimitStore]
) -> None:
    one, two = stores(key_prefix=prefix), stores(key_prefix=prefix)
    results: list[float | None] = []

    async def spend(store: RedisLimitStore) -> None:
        results.append(await store.take(BUCKET, time.monotonic()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(6):  # burst + 1, interleaved over both clients
                tg.start_soon(spend, one if n % 2 else two)
    assert results.count(None) == 5
    refused = [r for r in results if r is not None]
    assert len(refused) == 1 and refused[0] > 0


async def test_a_refill_follows_the_redis_servers_clock_whatever_the_callers_pass(
    prefix: str, stores: Callable[..., RedisLimitStore]
) -> None:
    store = stores(key_prefix=prefix)
    key = [("agent:s:a", RateLimit(rate=1.0, burst=1))]
    assert await store.take(key, 0.0) is None
    # A caller whose monotonic clock is an hour ahead gains nothing: the server's clock has not moved.
    wait = await store.take(key, 3600.0)
    assert wait is not None and 0.9 < wait <= 1.0
    (bucket,) = await keys_under(f"{prefix}rl:")
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        seconds, _ = await client.time()
        tokens, stamp = (await client.get(bucket)).split()
        assert float(tokens) == 0.0 and abs(float(stamp) - seconds) < 5  # stamped with the server's time
        assert 0 < await client.pttl(bucket) <= 2000  # gone once it would be full again (1 s + 1 s margin)
    finally:
        await client.aclose()


async def test_the_session_cap_holds_across_two_stores(prefix: str, stores: Callable[..., RedisLimitStore]) -> None:
    one = stores(key_prefix=prefix, max_sessions_per_principal=2)
    two = stores(key_prefix=prefix, max_sessions_per_principal=2)
    now = time.time()
    await one.reserve_session(ALICE, now)
    await two.reserve_session(ALICE, now)
    for store in (one, two):
        with pytest.raises(RateLimited) as refused:
            await store.reserve_session(ALICE, now)
        assert refused.value.retry_after == 1.0  # only initializes in flight fill the cap
    await one.session_opened(ALICE, "everything", "up-1", now)
    await two.session_cancelled(ALICE)
    await one.reserve_session(ALICE, now)  # two's place came back; one's became a session
    with pytest.raises(RateLimited):
        await two.reserve_session(ALICE, now)
    await two.session_closed(ALICE, "everything", "up-1")  # any replica may end any session
    await two.reserve_session(ALICE, now)


async def test_a_crashed_replicas_sessions_and_initializes_stop_counting(
    prefix: str, stores: Callable[..., RedisLimitStore]
) -> None:
    crashed = stores(key_prefix=prefix, max_sessions_per_principal=2, time_source="caller")
    await crashed.reserve_session(ALICE, 0.0)
    await crashed.session_opened(ALICE, "everything", "up-1", 0.0)
    await crashed.reserve_session(ALICE, 50.0)  # the replica dies mid-initialize: never settled
    # The keys expire too, so a principal that never comes back leaves nothing behind.
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert 0 < await client.pttl(f"{prefix}sess:{ALICE}") <= 100_000
        assert 0 < await client.pttl(f"{prefix}resv:{ALICE}") <= 600_000
    finally:
        await client.aclose()
    await crashed.aclose()
    survivor = stores(key_prefix=prefix, max_sessions_per_principal=2, time_source="caller")
    with pytest.raises(RateLimited) as refused:
        await survivor.reserve_session(ALICE, 60.0)
    assert refused.value.retry_after == 40.0  # up-1 ends at 100
    await survivor.reserve_session(ALICE, 100.0)  # up-1 expired
    with pytest.raises(RateLimited):
        await survivor.reserve_session(ALICE, 100.0)
    await survivor.reserve_session(ALICE, 651.0)  # the orphaned reservation expired after 600 s


async def test_redis_refusing_connections_denies_with_503_by_default(stores: Callable[..., RedisLimitStore]) -> None:
    sock, port = closed_port()
    with sock:
        store = stores(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.5)
        with anyio.fail_after(5), pytest.raises(LimitStoreUnavailable) as refused:
            await store.take(BUCKET, 0.0)
        assert refused.value.status_code == 503
        assert ("retry-after", "1") in refused.value.headers
        assert "limit store" in refused.value.message and "nothing was forwarded" in refused.value.message
        await _until_down(store)
        with anyio.fail_after(5), pytest.raises(LimitStoreUnavailable):
            await store.reserve_session(ALICE, 0.0)
        # Bookkeeping after the fact never refuses.
        await store.session_opened(ALICE, "everything", "up-1", 0.0)
        await store.session_closed(ALICE, "everything", "up-1")
        assert store.stats.denied_while_down == 2 and store.stats.allowed_while_down == 0


async def test_redis_down_with_on_store_down_allow_lets_calls_through_and_counts_them(
    stores: Callable[..., RedisLimitStore],
) -> None:
    sock, port = closed_port()
    with sock:
        store = stores(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.5, on_store_down="allow")
        with anyio.fail_after(5):
            assert [await store.take(BUCKET, 0.0) for _ in range(8)] == [None] * 8  # burst 5, all allowed
            await store.reserve_session(ALICE, 0.0)
            await store.session_opened(ALICE, "everything", "up-1", 0.0)
        await _until_down(store)
        assert store.stats.allowed_while_down == 9 and store.stats.denied_while_down == 0


async def test_a_redis_that_accepts_and_never_answers_costs_one_timeout_then_fails_fast(
    stores: Callable[..., RedisLimitStore],
) -> None:
    door = RedisDoor()
    door.mode = "blackhole"
    async with door.serving():
        store = stores(door.url, timeout_seconds=0.3, ping_seconds=60)
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(LimitStoreUnavailable):
            await store.take(BUCKET, 0.0)
        assert 0.25 < time.monotonic() - started < 1.5  # bounded by timeout_seconds
        await _until_down(store)  # the ping it woke timed out too
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(LimitStoreUnavailable):
                await store.take(BUCKET, 0.0)
        assert time.monotonic() - started < 0.1  # down: nobody waits on Redis any more
        assert store.stats.failures == 1 and store.stats.denied_while_down == 21


async def test_one_failed_call_refuses_that_call_only_while_redis_answers_pings(
    prefix: str, stores: Callable[..., RedisLimitStore]
) -> None:
    store = stores(key_prefix=prefix, ping_seconds=60)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.lpush(f"{prefix}rl:agent:s:broken", "not a bucket")  # the script's GET fails: WRONGTYPE
    finally:
        await client.aclose()
    with pytest.raises(LimitStoreUnavailable):
        await store.take([("agent:s:broken", RateLimit(rate=1.0, burst=1))], 0.0)
    with anyio.fail_after(5):
        while store.stats.pings < 2:  # the ping at start, then the one the failed call woke
            await anyio.sleep(0.01)
    # It succeeded: the store stays up and the next call goes to Redis.
    assert store.healthy
    assert await store.take(BUCKET, 0.0) is None
    assert store.stats.failures == 1 and store.stats.round_trips == 2


@pytest.mark.parametrize("outage", ["blackhole", "refused"])
async def test_the_store_heals_by_itself_when_redis_returns(
    prefix: str, stores: Callable[..., RedisLimitStore], outage: Literal["blackhole", "refused"]
) -> None:
    door = RedisDoor()
    async with door.serving():
        if outage == "blackhole":
            door.mode = "blackhole"
        else:
            door.refuse()
        store = stores(door.url, key_prefix=prefix, timeout_seconds=0.3, ping_seconds=0.05)
        with anyio.fail_after(5), pytest.raises(LimitStoreUnavailable):
            await store.take(BUCKET, 0.0)
        await _until_down(store)
        door.mode = "forward"  # Redis is back, at the same address
        if outage == "refused":
            await door.listen()
        with anyio.fail_after(10):
            while not store.healthy:
                await anyio.sleep(0.02)
        assert await store.take(BUCKET, 0.0) is None
        assert await keys_under(f"{prefix}rl:") == [f"{prefix}rl:agent:s:alice-bot"]


async def test_the_factory_builds_the_redis_store_from_the_config(tmp_path: Path) -> None:
    from mcp_gateway.config import load_config

    (tmp_path / "server_allowlist.toml").write_text("")
    (tmp_path / "gateway.toml").write_text(
        f'[rate_limits]\nredis_url = "{REDIS_URL}"\non_store_down = "allow"\nredis_key_prefix = "fleet-a:"\n'
    )
    store = build_limit_store(load_config(tmp_path / "gateway.toml"))
    try:
        assert isinstance(store, RedisLimitStore)
        assert (store.on_store_down, store.prefix, store.timeout) == ("allow", "fleet-a:", 0.5)
    finally:
        await store.aclose()


# -- through the gateway -----------------------------------------------------------------------------


async def _call(stack: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            return await http.post(
                stack.mcp_url(),
                headers=modern_headers(stack.token(["tools:read", "tools:call"]), "tools/call", "echo"),
                json=modern_call_body("echo", {"message": "hi"}),
            )


async def test_with_redis_down_a_tool_call_gets_503_nothing_is_forwarded_and_readyz_and_metrics_say_so(
    tmp_path: Path,
) -> None:
    sock, port = closed_port()
    with sock:
        extra = f'[rate_limits]\nredis_url = "redis://127.0.0.1:{port}/0"\nper_agent = {{ rate = 10.0, burst = 10 }}\n'
        async with gateway_stack(tmp_path, gateway_extra=extra) as stack:
            response = await _call(stack)
            async with httpx2.AsyncClient(timeout=10) as http:
                ready = await http.get(f"{stack.base_url}/readyz")
                metrics = (await http.get(f"{stack.base_url}/metrics")).text
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "limit store" in json_error(response)["message"]
    assert stack.tap.calls("tools/call") == []
    assert ready.status_code == 503 and ready.json()["checks"]["limits"] is False
    assert "mcp_gateway_limits_healthy 0.0" in metrics
    assert "mcp_gateway_limits_denied_while_down_total 1.0" in metrics


async def test_with_redis_down_an_initialize_gets_503_and_the_upstream_opens_no_session(tmp_path: Path) -> None:
    sock, port = closed_port()
    with sock:
        extra = f'[rate_limits]\nredis_url = "redis://127.0.0.1:{port}/0"\n'
        async with gateway_stack(tmp_path, gateway_extra=extra) as stack, httpx2.AsyncClient(timeout=10) as http:
            with anyio.fail_after(10):
                response = await http.post(stack.mcp_url(), headers=post_headers(stack.token()), json=initialize_body())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "session cap" in json_error(response)["message"]
    assert "mcp-session-id" not in response.headers
    assert stack.tap.calls("initialize") == []


async def test_a_per_agent_burst_holds_across_two_gateways_sharing_redis(tmp_path: Path, prefix: str) -> None:
    extra = (
        f'[rate_limits]\nredis_url = "{REDIS_URL}"\nredis_key_prefix = "{prefix}"\n'
        "per_agent = { rate = 0.001, burst = 3 }\n"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        gateway_stack(tmp_path / "a", gateway_extra=extra) as a,
        gateway_stack(tmp_path / "b", gateway_extra=extra) as b,
    ):
        # The two stacks have their own issuers, so agent-a's bucket key is the same on both (agent id and
        # server), which is what a fleet behind one issuer looks like.
        statuses = [(await _call(stack)).status_code for stack in (a, b, a, b)]
        async with httpx2.AsyncClient(timeout=10) as http:
            ready = (await http.get(f"{a.base_url}/readyz")).json()
    assert statuses == [200, 200, 200, 429]
    assert ready["checks"]["limits"] is True
