"""A fleet on loopback: two `mcp-gateway serve` replicas behind a round-robin balancer, sharing PostgreSQL and Redis.

    async with running_fleet(tmp_path) as fleet:
        fleet.url                          # the balancer's MCP endpoint, which is every replica's public_url
        fleet.token()                      # a token for an agent no other call used (its own rate-limit bucket)
        fleet.upstream.calls("tools/call") # what the example upstream received, recorded as it arrived
        fleet.replicas[1].kill()           # SIGKILL; fleet.doors[1].hang() cuts replica 1 off from PostgreSQL
        await fleet.cli("audit", "verify") # the auditor's CLI, as a process, on the fleet's PostgreSQL schema

Each replica is a real process with its own config directory; all of them read one session key from the same
environment variable, write to one PostgreSQL schema (each through a door of its own, which the test can
break) and draw from one Redis key prefix. The upstream and the issuer run in the test's process.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest
from anyio.abc import Process

from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from tests._servers import free_port, serve_asgi
from tests.audit.postgres._pg import SERVER_URL, execute, schema_url
from tests.e2e._audit_support import REPO, ReceivedCalls, _child_env, wait_ready
from tests.limits._redis import REDIS_URL, key_prefix, require_redis

from ._doors import PostgresDoor, RoundRobin

ISSUER = "https://issuer.fleet.test"
SESSION_KEY_ENV = "MCP_GATEWAY_FLEET_SESSION_KEY"
BURST = 10  # every agent's per-agent bucket, shared by the whole fleet through Redis
AGENTS = 400  # clients the issuer knows; each token goes to a fresh one unless a test names one
SCOPES = ("tools:read", "tools:call")


async def require_postgres() -> None:
    """Skip loudly when PostgreSQL is unreachable, or fail under CI=true (the fleet tests must run there)."""
    try:
        await execute(SERVER_URL, "SELECT 1")
    except Exception as exc:
        why = f"PostgreSQL is not reachable at {SERVER_URL} ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why}: under CI=true the fleet tests must run", pytrace=False)
        pytest.skip(f"!!! SKIPPING THE FLEET TESTS: {why}. Start PostgreSQL to run them.")


@dataclass
class Replica:
    """One `mcp-gateway serve` process; `index` is its place in the balancer's backends."""

    index: int
    directory: Path
    port: int
    process: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye to PostgreSQL."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def start(self, env: dict[str, str]) -> None:
        log = self.directory / "gateway.log"
        argv = [sys.executable, "-m", "mcp_gateway.cli", "serve", "--config", str(self.directory / "gateway.toml")]
        with open(log, "ab") as stderr:
            self.process = await anyio.open_process(
                [*argv, "--log-level", "warning"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
                env=env,
            )
        try:
            await wait_ready(self.base_url, self.process, timeout=60)
        except BaseException:
            raise RuntimeError(f"replica {self.index} did not become ready; its log:\n{log.read_text()}") from None

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        with anyio.move_on_after(10, shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.aclose()


@dataclass
class Fleet:
    balancer: RoundRobin
    doors: list[PostgresDoor]
    replicas: list[Replica]
    upstream: ReceivedCalls
    issuer: IssuerConfig
    pg_url: str  # the fleet's schema, straight to PostgreSQL (not through a door)
    directory: Path
    _agents: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.balancer.port}/everything/mcp"

    def token(self, agent: str | None = None) -> str:
        """A token for `agent`, or for an agent no earlier call of the run used."""
        if agent is None:
            agent = f"agent-{next(self._agents)}"
        return mint_token(self.issuer, agent, scopes=list(SCOPES), resource=self.url, now=time.time())

    def fresh_agent(self) -> str:
        return f"agent-{next(self._agents)}"

    async def cli(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        """`mcp-gateway ARGV --config auditor.toml` as a process; auditor.toml names only `[audit] url`."""
        with anyio.fail_after(60):
            return await anyio.run_process(
                [sys.executable, "-m", "mcp_gateway.cli", *argv, "--config", str(self.directory / "auditor.toml")],
                check=False,
                cwd=REPO,
                env=_child_env(),
            )

    async def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(self.pg_url, timeout=10)
        try:
            return [tuple(row) for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()


def _issuer_toml() -> str:
    clients = "".join(
        f'[clients.agent-{n}]\nsecret = "test-secret-0123456789abcdef"\nscopes = ["tools:read", "tools:call"]\n'
        f'sub = "user-{n}"\n'
        for n in range(AGENTS)
    )
    return f'issuer = "{ISSUER}"\nalgorithm = "ES256"\ntoken_lifetime_seconds = 600\n\n{clients}'


def _gateway_toml(*, port: int, public_port: int, jwks_uri: str, prefix: str, audit_url: str) -> str:
    return (
        f'public_url = "http://127.0.0.1:{public_port}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'allowlist = "server_allowlist.toml"\nsession_key_env = "{SESSION_KEY_ENV}"\n\n'
        f'[auth]\nissuer = "{ISSUER}"\njwks_uri = "{jwks_uri}"\nalgorithms = ["ES256"]\n\n'
        f'[rate_limits]\nredis_url = "{REDIS_URL}"\nredis_key_prefix = "{prefix}"\n'
        f"per_agent = {{ rate = 0.001, burst = {BURST} }}\n\n"
        f'[audit]\nurl = "{audit_url}"\n'
    )


def _through(url: str, port: int) -> str:
    """`url` with its host and port replaced by 127.0.0.1:`port` (a door in front of the same server)."""
    parts = urlsplit(url)
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()


@asynccontextmanager
async def _schema() -> AsyncIterator[str]:
    schema = "fleet_" + os.urandom(6).hex()
    await execute(SERVER_URL, f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(SERVER_URL, schema)
    finally:
        with anyio.fail_after(30, shield=True):
            await execute(SERVER_URL, f"DROP SCHEMA {schema} CASCADE")


@asynccontextmanager
async def running_fleet(directory: Path, replicas: int = 2) -> AsyncIterator[Fleet]:
    from examples.everything_server import build_app

    await require_postgres()
    require_redis()
    (directory / "issuer.toml").write_text(_issuer_toml())
    issuer = load_issuer_config(directory / "issuer.toml")
    upstream = ReceivedCalls(build_app())
    env = {**_child_env(), SESSION_KEY_ENV: os.urandom(32).hex()}
    async with AsyncExitStack() as stack:
        pg_url = await stack.enter_async_context(_schema())
        prefix = await stack.enter_async_context(key_prefix())
        upstream_base = await stack.enter_async_context(serve_asgi(upstream))
        issuer_base = await stack.enter_async_context(serve_asgi(create_issuer_app(issuer)))
        balancer = await stack.enter_async_context(RoundRobin())
        target_port = urlsplit(SERVER_URL).port or 5432
        doors = [await stack.enter_async_context(PostgresDoor(target_port)) for _ in range(replicas)]
        (directory / "auditor.toml").write_text(f'[audit]\nurl = "{pg_url}"\n')
        fleet = Fleet(balancer, doors, [], upstream, issuer, pg_url, directory)
        for index in range(replicas):
            home = directory / f"replica-{index}"
            home.mkdir()
            (home / "server_allowlist.toml").write_text(
                f'[servers.everything]\nurl = "{upstream_base}/mcp"\ndefault_scopes = ["tools:call"]\n\n'
                '[servers.everything.tool_scopes]\necho = ["tools:read"]\n'
            )
            replica = Replica(index, home, free_port())
            (home / "gateway.toml").write_text(
                _gateway_toml(
                    port=replica.port,
                    public_port=balancer.port,
                    jwks_uri=f"{issuer_base}/jwks.json",
                    prefix=prefix,
                    audit_url=_through(pg_url, doors[index].port),
                )
            )
            fleet.replicas.append(replica)
            stack.push_async_callback(replica.stop)
        balancer.backends = [replica.port for replica in fleet.replicas]
        async with anyio.create_task_group() as tg:  # both start at once: start-up is most of a fleet's cost
            for replica in fleet.replicas:
                tg.start_soon(replica.start, env)
        yield fleet
