"""`mcp-gateway demo` runs the whole thing: an SDK client uses its printed token, and Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests._servers import free_port

pytestmark = pytest.mark.anyio


async def test_the_demo_prints_a_working_token_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mcp_gateway.cli", "demo", "--dir", str(tmp_path / "demo"),
            "--gateway-port", str(ports[0]), "--issuer-port", str(ports[1]), "--upstream-port", str(ports[2]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        with anyio.fail_after(60):
            while not any(line.startswith("A ready token") for line in lines[:-2]):
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                assert line, "the demo exited before printing its banner:\n" + "".join(lines)
                lines.append(line.decode())
        token = lines[next(i for i, line in enumerate(lines) if line.startswith("A ready token")) + 2].strip()
        endpoint = f"http://127.0.0.1:{ports[0]}/everything/mcp"
        assert any(endpoint in line for line in lines)
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        with anyio.fail_after(30):
            async with http, Client(streamable_http_client(endpoint, http_client=http)) as client:
                result = await client.call_tool("echo", {"message": "from the demo"})
        assert result.content[0].text == "from the demo"  # type: ignore[union-attr]
        # Delegation end to end: the upstream verifies the token the gateway exchanged for it and reports
        # the user as `sub` and the agent in `act`.
        with anyio.fail_after(60):
            while not any(line.startswith("A delegated call") for line in lines):
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                assert line, "the demo exited before its delegated call:\n" + "".join(lines)
                lines.append(line.decode())
        delegated = json.loads(next(line for line in lines if line.startswith("A delegated call")).split(": ", 1)[1])
        assert (delegated["sub"], delegated["act"]) == ("alice@example.com", {"sub": "demo-agent"})
        assert delegated["aud"] == f"http://127.0.0.1:{ports[2]}/mcp"
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            code = await anyio.to_thread.run_sync(process.wait)
        process.stdout.close()
    assert code == 0
    query = subprocess.run(
        [sys.executable, "-m", "mcp_gateway.cli", "audit", "query", "--format", "json",
         "--config", str(tmp_path / "demo" / "gateway.toml")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in query.stdout.splitlines()]
    assert sorted((r["tool"], r["decision"], r["outcome"], r["agent_id"]) for r in rows) == [
        ("echo", "allow", "ok", "demo-agent"),
        ("whoami", "allow", "ok", "demo-agent"),
    ]
    assert {r["delegating_user"] for r in rows} == {"alice@example.com"}
    (whoami,) = [r for r in rows if r["tool"] == "whoami"]
    assert json.loads(whoami["upstream_credential"])["type"] == "token_exchange"
