"""The PostgreSQL audit sink against the SQLite one: calls per second and CPU per call, without a gateway.

    python bench/audit_pg_sink.py [--url postgresql://postgres@127.0.0.1:5432/test] [--calls 4000]

C asyncio tasks (uvloop, this process pinned to one CPU as the gateway is) each `await sink.append(intent)`
then `sink.append_nowait(outcome)`, one call at a time; records are built before the clock starts. "CPU
us/call" is this process's CPU (event loop and any writer thread) per intent+outcome pair: for PostgreSQL
the server's own CPU is not in it. Each run ends with flush() and checks the log verifies. The PostgreSQL
log goes to a scratch schema, dropped afterwards; the SQLite one to /var/tmp, synchronous=full.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from mcp_gateway.audit.postgres import PostgresAuditReader, PostgresAuditSink
from mcp_gateway.audit.record import AuditRecord, new_event_id, outcome_of
from mcp_gateway.audit.sqlite import SQLiteAuditReader, SQLiteAuditSink


def records(n: int) -> list[tuple[AuditRecord, AuditRecord]]:
    out = []
    for _ in range(n):
        now = time.time()
        intent = AuditRecord(
            phase="intent",
            timestamp=now,
            event_id=new_event_id(now),
            agent_id="agent-7",
            tool="echo",
            delegating_user="alice@example.com",
            mcp_server="everything",
            method="tools/call",
            decision="allow",
            scope_granted=("tools:read",),
            scopes_required=("tools:read",),
            arguments_sha256="cd" * 32,
        )
        out.append((intent, outcome_of(intent, outcome="ok", timestamp=now, http_status=200, latency_ms=1.0)))
    return out


async def run(sink: Any, calls: list[tuple[AuditRecord, AuditRecord]], concurrency: int) -> tuple[float, float]:
    await sink.start()
    queue = list(calls)

    async def worker() -> None:
        while queue:
            intent, outcome = queue.pop()
            await sink.append(intent)
            sink.append_nowait(outcome)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await sink.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await sink.aclose()
    return len(calls) / wall, cpu / len(calls) * 1e6


async def scratch(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"{'store':<10} {'C':>3} {'calls/s':>9} {'CPU us/call':>12}")
    for concurrency in (1, 8, 64):
        for store in ("sqlite", "postgres"):
            results = []
            for _ in range(args.rounds):
                calls = records(args.calls)
                if store == "sqlite":
                    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                        path = Path(tmp) / "audit.db"
                        results.append(uvloop.run(run(SQLiteAuditSink(path), calls, concurrency)))
                        assert SQLiteAuditReader(path).verify().ok
                else:
                    schema = "bench_" + os.urandom(4).hex()
                    asyncio.run(scratch(args.url, f"CREATE SCHEMA {schema}"))
                    url = f"{args.url}?options=-csearch_path%3D{schema}"
                    try:
                        results.append(uvloop.run(run(PostgresAuditSink(url), calls, concurrency)))
                        assert PostgresAuditReader(url).verify().ok
                    finally:
                        asyncio.run(scratch(args.url, f"DROP SCHEMA {schema} CASCADE"))
            rate = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            print(f"{store:<10} {concurrency:>3} {rate:>9.0f} {cpu:>12.1f}")


if __name__ == "__main__":
    main()
