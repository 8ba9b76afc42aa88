"""Raw MCP requests for tests that speak HTTP themselves: the protocol eras, request headers and the envelope.

    headers = post_headers(token, version=HANDSHAKE, session=session)   # handshake era (2025-11-25)
    headers = modern_headers(token, "tools/call", "echo")               # stateless era (2026-07-28)
    body = {..., "params": {..., "_meta": dict(MODERN_META)}}
    session = await open_session(http, url, token)                     # initialize + notifications/initialized

The SDK client hides statuses and headers; the failure-path tests of every package build their requests
with these, so that what a well-formed request carries is written down once.
"""

from __future__ import annotations

from typing import Any

import httpx2

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT_BOTH = "application/json, text/event-stream"

# What every 2026-07-28 request carries in `params._meta` (the SDK sends these keys, and clientInfo).
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def post_headers(
    token: str | None,
    *,
    version: str | None = None,
    session: str | None = None,
    method: str | None = None,
    name: str | None = None,
) -> dict[str, str]:
    """Headers of a JSON-RPC POST; each optional header is sent only when given."""
    headers = {"content-type": "application/json", "accept": ACCEPT_BOTH}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if version is not None:
        headers["mcp-protocol-version"] = version
    if session is not None:
        headers["mcp-session-id"] = session
    if method is not None:
        headers["mcp-method"] = method
    if name is not None:
        headers["mcp-name"] = name
    return headers


def modern_headers(token: str | None, method: str, name: str | None = None) -> dict[str, str]:
    """Headers of a 2026-07-28 request: the version, and the method and name mirrored from the body."""
    return post_headers(token, version=MODERN, method=method, name=name)


def initialize_body(request_id: int = 1, version: str = HANDSHAKE) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {"sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "raw-test-client", "version": "0"},
        },
    }


async def open_session(http: httpx2.AsyncClient, url: str, token: str) -> str:
    """Initialize a handshake-era session at `url`; the `Mcp-Session-Id` the gateway handed out."""
    response = await http.post(url, headers=post_headers(token), json=initialize_body())
    assert response.status_code == 200, response.text
    session = response.headers.get("mcp-session-id")
    assert session, "the gateway's initialize answer carries no Mcp-Session-Id"
    notified = await http.post(
        url,
        headers=post_headers(token, version=HANDSHAKE, session=session),
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )
    assert notified.status_code == 202, notified.text
    return session
