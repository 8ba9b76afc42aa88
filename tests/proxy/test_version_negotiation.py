"""Initializes asking for, or settling on, a version the gateway does not serve.

MCP lifecycle §Version Negotiation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.transport.asgi import Receive, Scope, Send
from tests._mcp import HANDSHAKE, initialize_body, post_headers
from tests._stack import gateway_stack
from tests.proxy._support import ScriptedUpstream, call_body, json_error, messages_until_response, send_raw

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("requested", ["2024-11-05", "2025-03-26", "2026-07-28", "1999-01-01"])
async def test_a_version_the_gateway_does_not_serve_is_negotiated_to_its_latest(tmp_path: Path, requested: str) -> None:
    async with gateway_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=10) as http:
        token = stack.token()
        with anyio.fail_after(20):
            async with http.stream(
                "POST", stack.mcp_url(), headers=post_headers(token), json=initialize_body(version=requested)
            ) as response:
                (answer,) = [m for m in await messages_until_response(response, 1) if m.get("id") == 1]
                session = response.headers["mcp-session-id"]
            version = answer["result"]["protocolVersion"]
            # The session works at the version the client was answered with.
            headers = post_headers(token, version=version, session=session)
            notified = await http.post(
                stack.mcp_url(), headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
            )
            async with http.stream(
                "POST", stack.mcp_url(), headers=headers, json=call_body("echo", {"message": "negotiated"})
            ) as called:
                (result,) = [m for m in await messages_until_response(called, 2) if m.get("id") == 2]
    assert version == HANDSHAKE
    (forwarded,) = stack.tap.calls("initialize")
    assert forwarded["params"]["protocolVersion"] == HANDSHAKE
    assert forwarded["params"]["clientInfo"] == initialize_body()["params"]["clientInfo"]  # the rest untouched
    assert notified.status_code == 202
    assert result["result"]["content"][0]["text"] == "negotiated"


async def test_a_rewritten_initialize_keeps_a_lone_surrogate_the_client_sent(tmp_path: Path) -> None:
    # The parser keeps "\ud800" as a lone surrogate; re-encoding it must not crash the request (it did: 500).
    body = initialize_body(version="2024-11-05")
    body["params"]["clientInfo"]["name"] = "odd\ud800name"
    raw = json.dumps(body).encode()  # ASCII, with the \ud800 escape
    async with gateway_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(20):
            response = await http.post(stack.mcp_url(), headers=post_headers(stack.token()), content=raw)
    forwarded = next(body for method, _, body in stack.tap.requests if method == "POST")
    assert b"odd\\ud800name" in forwarded  # still the client's escape, now in valid JSON text
    assert json.loads(forwarded)["params"]["protocolVersion"] == HANDSHAKE
    # The example upstream refuses lone surrogates itself; the gateway relays its JSON-RPC answer.
    assert response.status_code == 400
    assert json_error(response)["code"] == -32700


async def test_a_version_the_gateway_serves_is_forwarded_byte_for_byte(tmp_path: Path) -> None:
    async with gateway_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=10) as http:
        sent = json.dumps(initialize_body(version="2025-06-18"), indent=1).encode()
        with anyio.fail_after(20):
            headers = post_headers(stack.token())
            async with http.stream("POST", stack.mcp_url(), headers=headers, content=sent) as response:
                (answer,) = [m for m in await messages_until_response(response, 1) if m.get("id") == 1]
    assert answer["result"]["protocolVersion"] == "2025-06-18"
    assert next(body for method, _, body in stack.tap.requests if method == "POST") == sent


async def _settles_on_2024(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    if body.get("method") != "initialize":
        await send_raw(send, 202, b"", content_type=None)
        return
    answer = {"jsonrpc": "2.0", "id": body["id"], "result": {"protocolVersion": "2024-11-05", "capabilities": {}}}
    await send_raw(send, 200, json.dumps(answer).encode(), headers=[(b"mcp-session-id", b"old-upstream-session")])


async def test_an_upstream_settling_on_a_version_the_gateway_does_not_serve_fails_the_initialize(
    tmp_path: Path,
) -> None:
    upstream = ScriptedUpstream(_settles_on_2024)
    extra = "max_sessions_per_principal = 1\n"
    async with (
        gateway_stack(tmp_path, upstream_app=upstream, gateway_extra=extra) as stack,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        with anyio.fail_after(20):
            first = await http.post(stack.mcp_url(), headers=post_headers(stack.token()), json=initialize_body())
            # The failed initialize left no session counted against the principal's single place.
            second = await http.post(stack.mcp_url(), headers=post_headers(stack.token()), json=initialize_body())
    assert first.status_code == 200
    error = json_error(first)
    assert error["code"] == -32603
    assert "'2024-11-05'" in error["message"]
    assert error["data"] == {"supported": ["2025-11-25", "2025-06-18"], "upstream": "2024-11-05"}
    assert "result" not in first.json()
    assert second.status_code == 200  # not 429
