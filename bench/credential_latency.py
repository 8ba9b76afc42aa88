"""Added latency of a cached exchanged upstream token vs a static one, measured in the same run.

    python bench/credential_latency.py [--calls 50000]

Both sources issue the credential for the same request, the way the exchange asks per upstream call. The
token-exchange source is warmed with one fetch from a stand-in token endpoint (only that fetch leaves the
process); every measured call is a cache hit, which is the steady state of a busy agent. Prints µs per call
for each and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx2

from mcp_gateway.auth.principal import Principal
from mcp_gateway.config import ServerEntry
from mcp_gateway.credentials import CredentialContext, CredentialRequest, PublishedKeys, build_credential_source

UPSTREAM = "http://127.0.0.1:3001/mcp"


def _token_endpoint(request: httpx2.Request) -> httpx2.Response:
    body = {"access_token": "exchanged-" + "x" * 400, "token_type": "Bearer", "expires_in": 600, "scope": "tools:read"}
    return httpx2.Response(200, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


async def _per_call(source: object, request: CredentialRequest, calls: int) -> float:
    issue = source.issue  # type: ignore[attr-defined]
    await issue(request)  # warm: the exchange's one fetch
    started = time.perf_counter()
    for _ in range(calls):
        await issue(request)
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int) -> None:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(_token_endpoint))
    context = CredentialContext(lambda: client, time.time, ".", "http://127.0.0.1:8080", PublishedKeys(time.time))
    static = ServerEntry.model_validate(
        {"name": "s", "url": UPSTREAM, "credentials": {"type": "bearer", "token_env": "T"}}
    )
    exchange = ServerEntry.model_validate(
        {
            "name": "x",
            "url": UPSTREAM,
            "credentials": {
                "type": "token_exchange", "token_url": "http://127.0.0.1:9000/token", "client_id": "gateway",
                "client_secret_env": "S", "scope": "operation",
            },
        }
    )  # fmt: skip
    env = {"T": "static-secret-0123456789", "S": "client-secret-0123456789"}
    principal = Principal(
        "http://127.0.0.1:9000", "alice", "agent-a", "alice", (), frozenset({"tools:read"}), time.time() + 3600,
        "jti-1", (UPSTREAM,),
    )  # fmt: skip
    request = CredentialRequest("x", UPSTREAM, principal, "tools/call", "echo", ("tools:read",), "a.b.c")
    static_source = build_credential_source(static, env, context)
    exchange_source = build_credential_source(exchange, env, context)
    rounds = []
    for _ in range(3):  # interleaved, best of three each: the machine is shared
        rounds.append(
            (await _per_call(static_source, request, calls), await _per_call(exchange_source, request, calls))
        )
    s, x = min(r[0] for r in rounds), min(r[1] for r in rounds)
    print(f"static bearer:            {s:.2f} µs per upstream call")
    print(f"cached exchanged token:   {x:.2f} µs per upstream call")
    print(f"added latency:            {x - s:.2f} µs per call (ratio {x / s:.2f}x)")
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().calls))
