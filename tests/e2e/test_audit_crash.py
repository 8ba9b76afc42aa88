"""A gateway killed with SIGKILL mid-stream loses no intent record and leaves an intact hash chain."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from tests._servers import free_port, serve_asgi
from tests.e2e._audit_support import (
    ReceivedCalls,
    call_tool,
    digest,
    gateway_process,
    json_rows,
    run_cli,
    run_cli_process,
    write_gateway_config,
)

pytestmark = pytest.mark.anyio

ISSUER = "https://issuer.e2e.test"
WORKERS = 16
KILL_EVERY = 40  # the gateway is killed when the upstream has received another KILL_EVERY tools/call requests
KILLS = 2


@dataclass
class Setup:
    config: Path
    base_url: str
    issuer: IssuerConfig
    upstream: ReceivedCalls
    log: Path

    def token(self) -> str:
        return mint_token(
            self.issuer, "agent-a", scopes=["tools:read"], resource=f"{self.base_url}/everything/mcp", now=time.time()
        )


@asynccontextmanager
async def upstream_and_issuer(directory: Path) -> AsyncIterator[Setup]:
    """The example upstream (behind a tap) and the dev issuer's JWKS in this process; config files for a
    gateway process in `directory`."""
    from examples.everything_server import build_app

    (directory / "issuer.toml").write_text(
        f'issuer = "{ISSUER}"\nalgorithm = "ES256"\ntoken_lifetime_seconds = 600\n\n'
        '[clients.agent-a]\nsecret = "test-secret-0123456789abcdef"\nscopes = ["tools:read"]\nsub = "user-of-agent-a"\n'
    )
    issuer = load_issuer_config(directory / "issuer.toml")
    upstream = ReceivedCalls(build_app())
    async with serve_asgi(upstream) as upstream_base, serve_asgi(create_issuer_app(issuer)) as issuer_base:
        port = free_port()
        config = write_gateway_config(
            directory,
            port=port,
            upstream_url=f"{upstream_base}/mcp",
            issuer=ISSUER,
            jwks_uri=f"{issuer_base}/jwks.json",
            allowlist='[servers.everything.tool_scopes]\necho = ["tools:read"]',
        )
        yield Setup(config, f"http://127.0.0.1:{port}", issuer, upstream, directory / "gateway.log")


async def test_sigkill_mid_stream_keeps_every_forwarded_calls_intent_and_the_chain_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with upstream_and_issuer(tmp_path) as setup:
        url = f"{setup.base_url}/everything/mcp"
        token = setup.token()
        counter = itertools.count()
        answered: list[str] = []

        async def stream(http: httpx2.AsyncClient) -> None:
            # Each call carries a unique message, so its record can be found by its argument digest.
            while True:
                message = f"call-{next(counter)}"
                try:
                    response = await call_tool(http, url, token, "echo", {"message": message})
                except httpx2.TransportError:
                    return  # the gateway is gone
                assert response.status_code == 200, response.text
                answered.append(message)

        verdicts_after_kill = []
        with anyio.fail_after(30):
            for cycle in range(1, KILLS + 1):
                async with gateway_process(setup.config, setup.base_url, log=setup.log) as process:
                    # SIGKILL (no shutdown hook, no flush) the moment the upstream has received the n-th call,
                    # before it answers: calls are in flight and records may be mid-commit.
                    setup.upstream.on_call("tools/call", cycle * KILL_EVERY, process.kill)
                    async with httpx2.AsyncClient(timeout=10) as http, anyio.create_task_group() as tg:
                        for _ in range(WORKERS):
                            tg.start_soon(stream, http)
                    await process.wait()
                assert process.returncode == -signal.SIGKILL
                # The auditor can check the log of a crashed gateway before anyone restarts it.
                verdicts_after_kill.append(run_cli(capsys, "audit", "verify", "--config", str(setup.config)))
            async with (
                gateway_process(setup.config, setup.base_url, log=setup.log),
                httpx2.AsyncClient(timeout=10) as http,
            ):
                after = await call_tool(http, url, token, "echo", {"message": "after-restart"})
            assert after.status_code == 200, after.text

        verified = await run_cli_process("audit", "verify", "--config", str(setup.config))
        code, out = run_cli(capsys, "audit", "query", "--config", str(setup.config), "--format", "json")
    assert [code for code, _ in verdicts_after_kill] == [0] * KILLS, verdicts_after_kill
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    assert b"audit log intact" in verified.stdout
    assert code == 0
    rows = json_rows(out)
    recorded = {row["arguments_sha256"]: row for row in rows if row["method"] == "tools/call"}
    seen = [call["params"]["arguments"] for call in setup.upstream.calls("tools/call")]
    assert len(seen) >= KILLS * KILL_EVERY + 1
    missing = [arguments["message"] for arguments in seen if digest(arguments) not in recorded]
    assert missing == []
    # Every call answered before a kill is recorded as allowed, by the right agent; nothing was recorded twice.
    for message in answered:
        row = recorded[digest({"message": message})]
        assert (row["agent_id"], row["delegating_user"], row["tool"], row["decision"]) == (
            "agent-a",
            "user-of-agent-a",
            "echo",
            "allow",
        )
    assert len(recorded) == len([row for row in rows if row["method"] == "tools/call"])
    assert recorded[digest({"message": "after-restart"})]["outcome"] == "ok"
