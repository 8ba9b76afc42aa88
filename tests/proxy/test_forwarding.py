"""What the gateway sends upstream: only allowlisted headers, its own credential, never the client's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest

from examples.everything_server import build_app
from tests._mcp import modern_headers
from tests._stack import DEFAULT_ALLOWLIST, Stack, gateway_stack
from tests.proxy._support import EarlyTap, modern_call_body, sdk_client

pytestmark = pytest.mark.anyio

UPSTREAM_CREDENTIAL = "upstream-credential-5f1c2a9b"
CLIENT_ONLY_HEADERS = {
    "cookie": "session=client-cookie",
    "proxy-authorization": "Basic Y2xpZW50OnNlY3JldA==",
    "x-forwarded-for": "203.0.113.9",
    "x-forwarded-host": "attacker.example",
    "forwarded": "for=203.0.113.9",
    "x-real-ip": "203.0.113.9",
    "via": "1.1 somewhere",
    "keep-alive": "timeout=5",
    "te": "trailers",
    "connection": "keep-alive, x-hop",
    "x-hop": "hop-by-hop by Connection",
    "user-agent": "client-agent/1.0",
}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tap = EarlyTap(build_app())
    allowlist = (
        DEFAULT_ALLOWLIST + '\n[servers.everything.credentials]\ntype = "bearer"\ntoken_env = "EVERYTHING_TOKEN"\n'
    )
    async with gateway_stack(
        tmp_path_factory.mktemp("forwarding"),
        allowlist=allowlist,
        upstream_app=tap,
        secrets={"EVERYTHING_TOKEN": UPSTREAM_CREDENTIAL},
    ) as stack:
        yield stack


async def test_client_credentials_cookies_and_hop_by_hop_headers_never_reach_the_upstream(stack: Stack) -> None:
    token = stack.token(["tools:read"])
    headers = {
        **modern_headers(token, "tools/call", "echo"),
        **CLIENT_ONLY_HEADERS,
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    }
    before = len(stack.tap.requests)
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(), headers=headers, json=modern_call_body("echo", {"message": "hi"})
            )
    assert response.status_code == 200
    (_, received, _) = stack.tap.requests[before]
    assert not set(CLIENT_ONLY_HEADERS) & set(received)
    assert received["authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
    assert token not in json.dumps(received)
    assert received["traceparent"] == headers["traceparent"]
    assert received["mcp-method"] == "tools/call"
    assert received["mcp-name"] == "echo"


async def test_mcp_param_headers_are_forwarded_in_2026_07_28(stack: Stack) -> None:
    token = stack.token(["tools:call"])
    headers = {**modern_headers(token, "tools/call", "test_x_mcp_header"), "mcp-param-region": "eu-west"}
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(), headers=headers, json=modern_call_body("test_x_mcp_header", {"region": "eu-west"})
            )
    assert response.status_code == 200
    assert response.json()["result"]["content"][0]["text"] == "region=eu-west"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_upstream_credential_echoed_by_a_tool_is_redacted_before_the_client(stack: Stack, mode: str) -> None:
    with anyio.fail_after(10):
        async with sdk_client(stack, stack.token(["tools:call"]), mode=mode) as client:
            result = await client.call_tool("show_request_headers", {})
    seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert seen["authorization"] == "Bearer [REDACTED]"
    assert UPSTREAM_CREDENTIAL not in json.dumps(result.model_dump(mode="json"))
