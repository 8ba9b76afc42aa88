"""The official TypeScript SDK client (`@modelcontextprotocol/sdk`, pinned in package.json) through the gateway.

`ts_client.mjs` runs under the Node 22 that `npm ci` puts in node_modules/ and prints, as JSON, what the
server answered and every HTTP exchange the SDK made; these tests start a whole stack (example upstream, dev
issuer, gateway; `tests/_stack.py`) and check both sides: what the SDK saw, and what reached the upstream.

Needs the npm dependencies (`npm ci`); without them these tests fail and say so. `MCPGW_SKIP_CONFORMANCE=1`
skips them, like the other Node-based tests.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests._stack import Stack, gateway_stack
from tests.conformance.harness import INSTALL_HINT, NODE, REPO_ROOT

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MCPGW_SKIP_CONFORMANCE") == "1", reason="MCPGW_SKIP_CONFORMANCE=1"),
]

SCRIPT = Path(__file__).with_name("ts_client.mjs")
SDK = REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
ECHO_MESSAGE = "hello from the TypeScript SDK"  # what ts_client.mjs sends to `echo`
CLIENT_TIMEOUT = 30


@pytest.fixture(autouse=True)
def _sdk_installed() -> None:
    if not (NODE.is_file() and SDK.is_file()):
        pytest.fail(INSTALL_HINT)


async def run_ts_client(stack: Stack, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    """Run ts_client.mjs against the stack's gateway; return its exit status and the JSON it printed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")} | env
    with anyio.fail_after(CLIENT_TIMEOUT):
        process = await anyio.run_process(
            [str(NODE), str(SCRIPT), stack.mcp_url(), *args], env=environment, check=False
        )
    lines = process.stdout.decode().strip().splitlines()
    assert lines, f"ts_client.mjs printed nothing; it said: {process.stderr.decode()[-3000:]}"
    return process.returncode, json.loads(lines[-1])


def exchanges_to(result: dict[str, Any], url: str) -> list[tuple[str, str | None, int]]:
    """(method, JSON-RPC method, status) of each exchange the SDK had with `url`, in order."""
    return [(e["method"], e.get("rpc"), e["status"]) for e in result["exchanges"] if e["url"] == url]


def challenge_params(value: str) -> dict[str, str]:
    assert value.startswith("Bearer "), value
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


def upstream_session_ids(stack: Stack) -> set[str]:
    return {headers["mcp-session-id"] for _, headers, _ in stack.tap.requests if "mcp-session-id" in headers}


def assert_echoed(result: dict[str, Any]) -> None:
    assert "echo" in result["tools"]
    assert result["echo"]["isError"] is False
    assert result["echo"]["content"] == [{"type": "text", "text": ECHO_MESSAGE}]


async def test_the_typescript_sdk_lists_and_calls_tools_through_the_gateway_with_a_bearer_token(
    tmp_path: Path,
) -> None:
    async with gateway_stack(tmp_path) as stack:
        token = stack.token(["tools:read", "tools:call"])
        status, result = await run_ts_client(stack, "token", MCPGW_TOKEN=token)

        assert status == 0, result
        assert result["protocolVersion"] == "2025-11-25"  # the newest this SDK speaks: the handshake era
        assert_echoed(result)
        assert exchanges_to(result, stack.mcp_url()) == [
            ("POST", "initialize", 200),
            ("POST", "notifications/initialized", 202),
            ("GET", None, 200),  # the standalone SSE stream the SDK opens after the handshake
            ("POST", "tools/list", 200),
            ("POST", "tools/call", 200),
            ("DELETE", None, 200),  # terminateSession(): the session is ended upstream too
        ]
        # The session id the SDK holds is the gateway's sealed one; the upstream's never reached it.
        assert result["sessionId"] and result["sessionId"] not in upstream_session_ids(stack)
        assert upstream_session_ids(stack), "the upstream ran a session of its own"
        assert result["sessionIdAfterTermination"] is None
        assert [m for m, _, _ in stack.tap.requests].count("DELETE") == 1
        assert [c["params"]["arguments"] for c in stack.tap.calls("tools/call")] == [{"message": ECHO_MESSAGE}]
        # MCP authorization §Token Passthrough: the client's token never goes upstream.
        assert all("authorization" not in headers for _, headers, _ in stack.tap.requests)


async def test_the_typescript_sdk_authorizes_itself_from_the_gateways_401(tmp_path: Path) -> None:
    # ClientCredentialsProvider gets the gateway URL, a client id and secret and the issuer it may send them
    # to, nothing else: it has to find everything else from the gateway's 401 (RFC 9728) and the issuer's
    # metadata (RFC 8414), and ask for a token bound to the route (RFC 8707).
    async with gateway_stack(tmp_path) as stack:
        issuer = stack.issuer.issuer
        status, result = await run_ts_client(
            stack, "client-credentials", issuer, MCPGW_CLIENT_ID="agent-a", MCPGW_CLIENT_SECRET=stack.client_secret
        )

        assert status == 0, result
        assert_echoed(result)
        metadata_url = f"{stack.base_url}/.well-known/oauth-protected-resource/everything/mcp"
        first, prm, asm, token, *rest = result["exchanges"]
        assert (first["method"], first.get("rpc"), first["status"]) == ("POST", "initialize", 401)
        challenge = challenge_params(first["challenge"])
        assert challenge["resource_metadata"] == metadata_url
        assert "error" not in challenge  # RFC 6750 §3: no token was sent, so no error code
        assert (prm["method"], prm["url"], prm["status"]) == ("GET", metadata_url, 200)
        assert (asm["method"], asm["url"], asm["status"]) == (
            "GET",
            f"{issuer}/.well-known/oauth-authorization-server",
            200,
        )
        assert (token["method"], token["url"], token["status"]) == ("POST", f"{issuer}/token", 200)
        assert token["form"]["grant_type"] == "client_credentials"
        assert token["form"]["resource"] == stack.mcp_url()  # the audience the gateway demands
        assert [(e["method"], e.get("rpc"), e["status"]) for e in rest] == [
            ("POST", "initialize", 200),
            ("POST", "notifications/initialized", 202),
            ("GET", None, 200),
            ("POST", "tools/list", 200),
            ("POST", "tools/call", 200),
            ("DELETE", None, 200),
        ]
        assert [c["params"]["arguments"] for c in stack.tap.calls("tools/call")] == [{"message": ECHO_MESSAGE}]
        assert all("authorization" not in headers for _, headers, _ in stack.tap.requests)


async def test_a_typescript_client_short_of_a_scope_is_challenged_and_the_call_never_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    # A token for tools:call only; `echo` needs tools:read (tests/_stack.py's allowlist). The gateway answers
    # 403 insufficient_scope naming tools:read. The SDK (1.32) re-fetches a token, but its
    # ClientCredentialsProvider always asks for its configured scope rather than the challenged one, so the
    # retry gets the same 403 and the SDK gives up; the mcp SDK's provider does step up (test_oauth_client_flow).
    async with gateway_stack(tmp_path) as stack:
        status, result = await run_ts_client(
            stack,
            "client-credentials",
            stack.issuer.issuer,
            MCPGW_CLIENT_ID="agent-a",
            MCPGW_CLIENT_SECRET=stack.client_secret,
            MCPGW_SCOPE="tools:call",
        )

        assert status == 1
        assert "403" in result["error"], result
        refusals = [e for e in result["exchanges"] if e["status"] == 403]
        assert [(e["method"], e.get("rpc")) for e in refusals] == [("POST", "tools/call")] * 2
        challenge = challenge_params(refusals[0]["challenge"])
        assert challenge["error"] == "insufficient_scope"
        assert challenge["scope"] == "tools:read"
        assert challenge["resource_metadata"] == f"{stack.base_url}/.well-known/oauth-protected-resource/everything/mcp"
        token_requests = [e["form"] for e in result["exchanges"] if "form" in e]
        assert [(f["scope"], f["resource"]) for f in token_requests] == [("tools:call", stack.mcp_url())] * 2
        assert stack.tap.calls("tools/call") == []
