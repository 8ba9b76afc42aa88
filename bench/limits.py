"""What one rate-limit decision costs on the hot path: the in-process store against Redis, in one run.

    python bench/limits.py                     # C = 1, 8, 64 concurrent callers, 3 s each
    python bench/limits.py --seconds 1 --redis redis://127.0.0.1:6379/0

Each of C asyncio tasks (on uvloop, as the gateway runs) calls `store.take(keys, now)` in a loop with the
keys one tools/call draws from when all three limits are configured (agent, agent+tool, user), with a
bucket large enough never to refuse, so every decision is a full debit. Each task is its own agent, so the
decisions do not contend for one bucket. The same loop runs against `MemoryLimitStore` and `RedisLimitStore`
(one EVALSHA per decision, the server's clock) back to back in the same process.

Reported per store and C: decisions/s (wall), mean and p99 latency per decision (µs, wall) and this
process's CPU µs per decision (`time.process_time()`: what the gateway's own core pays; Redis's CPU is not
in it). The ratio column divides Redis by memory for the same C. The process is pinned to one CPU, as a
gateway worker is one process on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp_gateway.config import RateLimit, RateLimits
from mcp_gateway.errors import LimitStoreUnavailable
from mcp_gateway.limits import LimitStore, MemoryLimitStore
from mcp_gateway.limits.redis import RedisLimitStore
from mcp_gateway.policy import rate_limit_keys

LIMITS = RateLimits(
    per_agent=RateLimit(rate=1e6, burst=10**9),
    per_agent_tool=RateLimit(rate=1e6, burst=10**9),
    per_user=RateLimit(rate=1e6, burst=10**9),
)


async def _run(store: LimitStore, concurrency: int, seconds: float) -> tuple[int, list[float], float]:
    keys = [
        rate_limit_keys(LIMITS, agent_id=f"bench-agent-{n}", tool="echo", user=f"user-{n}", server="everything")
        for n in range(concurrency)
    ]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    count = errors = 0

    async def caller(own: list[tuple[str, RateLimit]]) -> None:
        nonlocal count, errors
        while (started := time.perf_counter()) < deadline:
            try:
                assert await store.take(own, time.monotonic()) is None
            except LimitStoreUnavailable:
                errors += 1  # timed out: counted, not a decision
                continue
            latencies.append(time.perf_counter() - started)
            count += 1

    # Warm-up: connections opened, scripts loaded.
    for own in keys:
        await store.take(own, time.monotonic())
    cpu = time.process_time()
    wall = time.perf_counter()
    deadline = wall + seconds
    await asyncio.gather(*(caller(own) for own in keys))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return count, latencies, cpu / count if count else float("nan"), errors


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-{uuid.uuid4().hex}:"
    print(f"python {sys.version.split()[0]}, CPU affinity {sorted(os.sched_getaffinity(0))}")
    try:
        import redis

        print(f"redis-py {redis.__version__}, hiredis parser: {redis.utils.HIREDIS_AVAILABLE}")
    except ImportError:
        pass
    print(f"{'store':<8}{'C':>4}{'decisions/s':>14}{'mean µs':>10}{'p99 µs':>10}{'CPU µs':>10}{'ratio':>8}")
    for concurrency in args.concurrency:
        memory_rate = memory_cpu = 0.0
        for name in ("memory", "redis"):
            store: LimitStore
            if name == "memory":
                store = MemoryLimitStore(10, 100.0)
            else:
                store = RedisLimitStore(
                    args.redis, max_sessions_per_principal=10, session_max_age_seconds=100.0, key_prefix=prefix
                )
            try:
                count, latencies, cpu, errors = await _run(store, concurrency, args.seconds)
            finally:
                await store.aclose()
            rate = count / args.seconds
            latencies.sort()
            mean = statistics.fmean(latencies) * 1e6
            p99 = latencies[int(len(latencies) * 0.99)] * 1e6
            if name == "memory":
                memory_rate, memory_cpu = rate, cpu
                ratio = ""
            else:
                ratio = f"{memory_rate / rate:.0f}x"
            print(
                f"{name:<8}{concurrency:>4}{rate:>14,.0f}{mean:>10.1f}{p99:>10.1f}{cpu * 1e6:>10.1f}{ratio:>8}"
                + (f"  ({errors} timed out)" if errors else "")
            )
        print(
            f"{'':<8}{'':>4}  Redis costs {(cpu - memory_cpu) * 1e6:.0f} CPU µs more per decision on the caller's core"
        )
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(args.redis)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--no-pin", action="store_true", help="do not pin this process to one CPU")
    arguments = parser.parse_args()
    if not arguments.no_pin:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import uvloop

    uvloop.run(main(arguments))
