"""Which PostgreSQL driver the audit writer uses: commit latency and CPU per record for one group commit.

Each driver writes groups of G audit rows (one multi-row INSERT plus the head-checkpoint UPDATE, one
transaction, synchronous_commit on) into a scratch schema, N times, and reports the wall time per commit
and the process CPU per record (all threads: the driver's parsing and encoding included).

    python bench/audit_pg_driver.py [--url postgresql://postgres@127.0.0.1:5432/test] [--groups 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg

DDL = """
CREATE TABLE records (chain_id text NOT NULL, seq bigint NOT NULL, event_id text NOT NULL, phase text NOT NULL,
  timestamp double precision NOT NULL, record text NOT NULL, hash text NOT NULL, PRIMARY KEY (chain_id, seq));
CREATE INDEX ON records (event_id); CREATE INDEX ON records (timestamp);
CREATE TABLE chains (chain_id text PRIMARY KEY, head_seq bigint NOT NULL, head_hash text NOT NULL);
"""
RECORD = '{"agent_id":"agent-7","arguments":null,"arguments_sha256":"' + "cd" * 32 + '","client_address":"127.0.0.1"'
RECORD += ',"decision":"allow","delegating_user":"alice@example.com","detail":null,"event_id":"%s","event_type":null'
RECORD += ',"http_status":null,"latency_ms":null,"mcp_server":"everything","method":"tools/call","outcome":null'
RECORD += ',"phase":"intent","policy_rule":"tool_scopes.echo","policy_version":"' + "ab" * 32 + '","prev_hash":"'
RECORD += "0" * 64 + '","request_context":"summarize the quarterly report","scope_granted":["tools:call"],'
RECORD += '"scopes_required":["tools:read"],"session_id":"sess-1","timestamp":1795867200.0,"token_id":"jti-1",'
RECORD += '"token_ttl":1800,"tool":"echo","upstream_identity":"spki:abc"}'


def rows(chain: str, start: int, count: int) -> list[tuple[Any, ...]]:
    out = []
    for seq in range(start, start + count):
        text = RECORD % os.urandom(16).hex()
        out.append((chain, seq, text[100:136], "intent", time.time(), text, hashlib.sha256(text.encode()).hexdigest()))
    return out


def insert_sql(count: int, mark: Callable[[int], str]) -> str:
    values = ",".join("(" + ",".join(mark(r * 7 + c) for c in range(7)) + ")" for r in range(count))
    return "INSERT INTO records VALUES " + values


def one_statement(count: int, mark: Callable[[int], str]) -> str:
    # The rows and the head checkpoint in one statement: atomic on its own, so a group commit is one round trip.
    n = count * 7
    return (
        f"WITH ins AS ({insert_sql(count, mark)} RETURNING 1) UPDATE chains SET head_seq = {mark(n)}::bigint, "
        f"head_hash = {mark(n + 1)} WHERE chain_id = {mark(n + 2)} AND (SELECT count(*) FROM ins) > 0"
    )


def report(name: str, group: int, latencies: list[float], cpu: float, records: int) -> None:
    lat = sorted(latencies)
    print(
        f"{name:<18} G={group:<4} commit p50 {statistics.median(lat) * 1e3:6.2f} ms  p99 "
        f"{lat[int(len(lat) * 0.99) - 1] * 1e3:6.2f} ms  CPU/record {cpu / records * 1e6:7.1f} us"
    )


def bench_psycopg(url: str, schema: str, group: int, groups: int) -> None:
    sql = insert_sql(group, lambda i: "%s")
    with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        chain = f"psycopg-{group}"
        batches = [rows(chain, 1 + i * group, group) for i in range(groups)]
        latencies, seq = [], 1
        cpu0 = time.process_time()
        for batch in batches:
            params = [v for row in batch for v in row]
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute(sql, params, prepare=True)
                conn.execute(
                    "UPDATE chains SET head_seq = %s, head_hash = %s WHERE chain_id = %s",
                    (seq + group - 1, batch[-1][-1], chain),
                    prepare=True,
                )
            latencies.append(time.perf_counter() - t0)
            seq += group
        report("psycopg3 sync", group, latencies, time.process_time() - cpu0, groups * group)


async def bench_psycopg_async(url: str, schema: str, group: int, groups: int) -> None:
    sql = insert_sql(group, lambda i: "%s")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        chain = f"psycopg_async-{group}"
        batches = [rows(chain, 1 + i * group, group) for i in range(groups)]
        latencies, seq = [], 1
        cpu0 = time.process_time()
        for batch in batches:
            params = [v for row in batch for v in row]
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(sql, params, prepare=True)
                await conn.execute(
                    "UPDATE chains SET head_seq = %s, head_hash = %s WHERE chain_id = %s",
                    (seq + group - 1, batch[-1][-1], chain),
                    prepare=True,
                )
            latencies.append(time.perf_counter() - t0)
            seq += group
        report("psycopg3 async", group, latencies, time.process_time() - cpu0, groups * group)


def bench_psycopg_one(url: str, schema: str, group: int, groups: int) -> None:
    sql = one_statement(group, lambda i: "%s")
    with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        chain = f"psycopg_one-{group}"
        batches = [rows(chain, 1 + i * group, group) for i in range(groups)]
        latencies, seq = [], 1
        cpu0 = time.process_time()
        for batch in batches:
            params = [v for row in batch for v in row] + [seq + group - 1, batch[-1][-1], chain]
            t0 = time.perf_counter()
            conn.execute(sql, params, prepare=True, binary=True)
            latencies.append(time.perf_counter() - t0)
            seq += group
        report("psycopg3 sync 1st", group, latencies, time.process_time() - cpu0, groups * group)


async def bench_asyncpg_one(url: str, schema: str, group: int, groups: int) -> None:
    sql = one_statement(group, lambda i: f"${i + 1}")
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        chain = f"asyncpg_one-{group}"
        batches = [rows(chain, 1 + i * group, group) for i in range(groups)]
        latencies, seq = [], 1
        cpu0 = time.process_time()
        for batch in batches:
            params = [v for row in batch for v in row] + [seq + group - 1, batch[-1][-1], chain]
            t0 = time.perf_counter()
            await conn.execute(sql, *params)
            latencies.append(time.perf_counter() - t0)
            seq += group
        report("asyncpg 1st", group, latencies, time.process_time() - cpu0, groups * group)
    finally:
        await conn.close()


UNNEST_SQL = (
    "WITH ins AS (INSERT INTO records SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], "
    "$5::float8[], $6::text[], $7::text[]) RETURNING 1) UPDATE chains SET head_seq = $8, head_hash = $9 "
    "WHERE chain_id = $1 AND (SELECT count(*) FROM ins) > 0"
)


async def bench_asyncpg_unnest(url: str, schema: str, group: int, groups: int) -> None:
    # One prepared statement for every group size: the rows go as six arrays.
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        chain = f"asyncpg_unnest-{group}"
        batches = [rows(chain, 1 + i * group, group) for i in range(groups)]
        latencies, seq = [], 1
        cpu0 = time.process_time()
        for batch in batches:
            columns = [list(column) for column in zip(*batch, strict=True)][1:]
            t0 = time.perf_counter()
            await conn.execute(UNNEST_SQL, chain, *columns, seq + group - 1, batch[-1][-1])
            latencies.append(time.perf_counter() - t0)
            seq += group
        report("asyncpg unnest", group, latencies, time.process_time() - cpu0, groups * group)
    finally:
        await conn.close()


async def bench_asyncpg(url: str, schema: str, group: int, groups: int) -> None:
    sql = insert_sql(group, lambda i: f"${i + 1}")
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        chain = f"asyncpg-{group}"
        batches = [rows(chain, 1 + i * group, group) for i in range(groups)]
        latencies, seq = [], 1
        cpu0 = time.process_time()
        for batch in batches:
            params = [v for row in batch for v in row]
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(sql, *params)
                await conn.execute(
                    "UPDATE chains SET head_seq = $1, head_hash = $2 WHERE chain_id = $3",
                    seq + group - 1,
                    batch[-1][-1],
                    chain,
                )
            latencies.append(time.perf_counter() - t0)
            seq += group
        report("asyncpg", group, latencies, time.process_time() - cpu0, groups * group)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--groups", type=int, default=200)
    args = parser.parse_args()
    schema = "bench_" + os.urandom(4).hex()
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"SET search_path = {schema}")
        admin.execute(DDL)
        for name in ("psycopg", "psycopg_async", "asyncpg", "psycopg_one", "asyncpg_one", "asyncpg_unnest"):
            for group in (1, 16, 128):
                admin.execute("INSERT INTO chains VALUES (%s, 0, '')", (f"{name}-{group}",))
        try:
            for group in (1, 16, 128):
                groups = max(20, args.groups // max(1, group // 8))
                bench_psycopg(args.url, schema, group, groups)
                asyncio.run(bench_psycopg_async(args.url, schema, group, groups))
                asyncio.run(bench_asyncpg(args.url, schema, group, groups))
                bench_psycopg_one(args.url, schema, group, groups)
                asyncio.run(bench_asyncpg_one(args.url, schema, group, groups))
                asyncio.run(bench_asyncpg_unnest(args.url, schema, group, groups))
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
