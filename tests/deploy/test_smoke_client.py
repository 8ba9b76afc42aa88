"""scripts/smoke_client.py, the client half of scripts/docker-smoke, runs the demo flow against a real gateway
(here one on loopback), so the flow the container smoke test relies on is checked wherever tests run."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from tests._stack import gateway_stack
from tests.deploy._files import ROOT

pytestmark = pytest.mark.anyio

SMOKE_CLIENT = ROOT / "scripts" / "smoke_client.py"


async def test_the_smoke_flow_passes_against_a_serving_gateway_and_every_call_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    async with gateway_stack(tmp_path, front_door=True) as stack:
        token = stack.token(["tools:read", "tools:call"])
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [sys.executable, str(SMOKE_CLIENT), "--url", stack.base_url, "--token", token, "--calls", "3"],
                check=False,
            )
        echoes = stack.tap.calls("tools/call")
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "3 stateless (2026-07-28) echo calls" in out and "3 echo calls in one session" in out
    assert [c["params"]["arguments"]["message"] for c in echoes] == [
        *(f"stateless {n}" for n in range(3)),
        *(f"session {n}" for n in range(3)),
    ]


async def test_the_smoke_flow_fails_when_the_token_is_not_good_for_the_route(tmp_path: Path) -> None:
    async with gateway_stack(tmp_path, front_door=True) as stack:
        token = stack.token(["tools:read"], resource=f"{stack.base_url}/other/mcp")
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [sys.executable, str(SMOKE_CLIENT), "--url", stack.base_url, "--token", token, "--calls", "1"],
                check=False,
            )
        forwarded = stack.tap.calls("tools/call")
    assert result.returncode == 1
    assert "FAIL  stateless call 0: HTTP 401" in result.stderr.decode()
    assert forwarded == []
