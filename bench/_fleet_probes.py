"""What bench/fleet.py reads besides HTTP: CPU of process trees and of the server processes serving them (/proc),
and PostgreSQL: a schema per cell, what was written to it, and the server's own commit rate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

PG_URL = os.environ.get("MCP_GATEWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the serve parent and its workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
    return out


def ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def connections_to(pids: list[int], port: int) -> list[int]:
    """Local ports of the TCP connections `pids` hold to `port` on loopback (from /proc: fd inodes, /proc/net/tcp)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def backends(url: str, client_ports: list[int]) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", client_ports)
        return [int(row[0]) for row in rows]
    finally:
        await conn.close()


def redis_server_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "redis-server":
                    pids.append(int(entry))
    return pids


async def _pg(url: str, sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _schema_url(schema: str) -> str:
    return PG_URL + ("&" if "?" in PG_URL else "?") + f"options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def pg_schema(enabled: bool) -> Iterator[str]:
    if not enabled:
        yield ""
        return
    schema = "bench_" + os.urandom(5).hex()
    asyncio.run(_pg(PG_URL, f"CREATE SCHEMA {schema}"))
    try:
        yield _schema_url(schema)
    finally:
        asyncio.run(_pg(PG_URL, f"DROP SCHEMA {schema} CASCADE"))


async def written(url: str) -> tuple[int, int]:
    """(records, commits) in the cell's schema so far."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow("SELECT count(*), count(DISTINCT tx) FROM audit_records")
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


def in_thread(coroutine: Any) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def pg_commit_rate(connections: int, seconds: float) -> float:
    """Commits/s PostgreSQL sustains here: `connections` clients each committing one-row INSERTs back to back
    with synchronous_commit on (what the audit writer's commit waits for)."""
    import asyncpg

    schema = "bench_" + os.urandom(5).hex()
    await _pg(PG_URL, f"CREATE SCHEMA {schema}")
    url = _schema_url(schema)
    try:
        await _pg(url, "CREATE TABLE t (v text)")
        conns = [await asyncpg.connect(url, server_settings={"synchronous_commit": "on"}) for _ in range(connections)]
        count = 0
        deadline = time.monotonic() + seconds

        async def commit_loop(conn: Any) -> None:
            nonlocal count
            while time.monotonic() < deadline:
                await conn.execute("INSERT INTO t VALUES ('x')")  # autocommit: one transaction each
                count += 1

        started = time.monotonic()
        await asyncio.gather(*(commit_loop(c) for c in conns))
        elapsed = time.monotonic() - started
        for conn in conns:
            await conn.close()
        return count / elapsed
    finally:
        await _pg(PG_URL, f"DROP SCHEMA {schema} CASCADE")
