"""`mcp-gateway demo` walks a newcomer through one approval: the tokens and commands it prints work."""

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

from mcp_gateway.demo import _HELD_CALL
from tests._servers import free_port
from tests.e2e._audit_support import run_cli_process

pytestmark = pytest.mark.anyio


def _after(lines: list[str], heading: str) -> str:
    """The first JWT printed after the line starting with `heading`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    return next(line.strip() for line in lines[start:] if line.startswith("eyJ"))


async def test_the_demo_prints_what_it_takes_to_approve_a_held_call(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    directory = tmp_path / "demo"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mcp_gateway.cli", "demo", "--dir", str(directory),
            "--gateway-port", str(ports[0]), "--issuer-port", str(ports[1]), "--upstream-port", str(ports[2]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    config = str(directory / "gateway.toml")
    try:
        with anyio.fail_after(60):
            while not any(line.startswith("Or open the console") for line in lines):
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                assert line, "the demo exited before printing its walkthrough:\n" + "".join(lines)
                lines.append(line.decode())
        agent, approver = _after(lines, "An agent token"), _after(lines, "An approver token")
        endpoint = f"http://127.0.0.1:{ports[0]}/everything/mcp"
        headers = {
            "authorization": f"Bearer {agent}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call",
            "mcp-name": "delete_everything",
        }
        events: list[str] = []
        async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:

            async def held_call() -> None:
                async with http.stream("POST", endpoint, content=_HELD_CALL, headers=headers) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line[6:])

            tg.start_soon(held_call)
            with anyio.fail_after(20):
                while not events:  # the progress notification: the call is held
                    await anyio.sleep(0.05)
            auth = ("--config", config, "--token", approver)
            listed = await run_cli_process("approvals", "list", "--format", "json", *auth)
            (item,) = [json.loads(line) for line in listed.stdout.splitlines()]
            assert item["tool"] == "delete_everything" and item["delegating_user"] == "alice@example.com"
            approved = await run_cli_process(
                "approvals", "approve", item["id"], "--reason", "spring cleaning is due", *auth
            )
            assert approved.returncode == 0, approved.stderr
        progress, answer = json.loads(events[0]), json.loads(events[-1])
        assert progress["method"] == "notifications/progress" and item["id"] in progress["params"]["message"]
        assert answer["result"]["content"][0]["text"] == "nothing deleted"
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            code = await anyio.to_thread.run_sync(process.wait)
        process.stdout.close()
    assert code == 0
    query = await run_cli_process(
        "audit", "query", "--format", "json", "--config", config, "--tool", "delete_everything"
    )
    rows = [json.loads(line) for line in query.stdout.splitlines()]
    approval = json.loads(rows[-1]["approval"])
    assert approval == {
        "id": item["id"],
        "approver": "bob@example.com",
        "decision": "approve",
        "reason": "spring cleaning is due",
    }
