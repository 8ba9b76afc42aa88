"""SECURITY.md "A governed method is judged whatever its shape; one sent without an id is invalid and never forwarded".

Each case asserts the status, the JSON-RPC error, that the upstream received nothing, and the audit record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.sink import MemoryAuditSink
from tests._mcp import HANDSHAKE, MODERN_META, modern_headers, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import json_error

pytestmark = pytest.mark.anyio

ALLOWLIST = """
default_scopes = ["tools:call"]

[servers.everything.tool_scopes]
echo = ["tools:read"]
"""

# Methods MCP defines as requests (the SDK's CLIENT_REQUESTS), in each era, sent without an id.
MODERN_REQUESTS = [
    ("tools/call", {"name": "echo", "arguments": {"message": "x"}}),
    ("resources/read", {"uri": "test://static-text"}),
    ("prompts/get", {"name": "test_simple_prompt"}),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "b"}}),
    ("subscriptions/listen", {}),
    ("tools/list", {}),
]
HANDSHAKE_REQUESTS = [
    ("tools/call", {"name": "echo", "arguments": {"message": "x"}}),
    ("resources/read", {"uri": "test://static-text"}),
    ("prompts/get", {"name": "test_simple_prompt"}),
    ("resources/subscribe", {"uri": "test://static-text"}),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "b"}}),
    ("logging/setLevel", {"level": "debug"}),
]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    sink = MemoryAuditSink()
    async with gateway_stack(tmp_path_factory.mktemp("shapes"), allowlist=ALLOWLIST, audit=sink) as stack:
        stack.extra["sink"] = sink
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


@contextmanager
def nothing_forwarded(stack: Stack) -> Iterator[None]:
    before = len(stack.tap.requests)
    yield
    assert len(stack.tap.requests) == before, stack.tap.requests[before:]


def _last_refusal(stack: Stack) -> AuditRecord:
    sink: MemoryAuditSink = stack.extra["sink"]
    refusals = [r for r in sink.records if r.event_type == "refusal"]
    assert refusals
    return refusals[-1]


def _modern_message(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": {**params, "_meta": MODERN_META}}


def _modern_headers_for(token: str, method: str, params: dict[str, Any]) -> dict[str, str]:
    name = params.get("name") or params.get("uri")
    return modern_headers(token, method, name if method in ("tools/call", "resources/read", "prompts/get") else None)


def _assert_refused(response: httpx2.Response, stack: Stack, method: str, text: str) -> None:
    assert response.status_code == 400
    assert json_error(response) == {"code": -32600, "message": text}
    assert response.json()["id"] is None
    record = _last_refusal(stack)
    assert (record.method, record.decision, record.policy_rule, record.http_status) == (
        method,
        "deny",
        "message_shape",
        400,
    )


@pytest.mark.parametrize(("method", "params"), MODERN_REQUESTS)
async def test_governed_method_without_an_id_is_invalid_and_never_forwarded_in_protocol_2026_07_28(
    stack: Stack, http: httpx2.AsyncClient, method: str, params: dict[str, Any]
) -> None:
    token = stack.token(["tools:read", "tools:call"])
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(), headers=_modern_headers_for(token, method, params), json=_modern_message(method, params)
        )
    text = f"Invalid Request: {method!r} is not a notification protocol 2026-07-28 defines; a request needs an id"
    _assert_refused(response, stack, method, text)


@pytest.mark.parametrize(("method", "params"), HANDSHAKE_REQUESTS)
async def test_governed_method_without_an_id_is_invalid_and_never_forwarded_in_the_handshake_era(
    stack: Stack, http: httpx2.AsyncClient, method: str, params: dict[str, Any]
) -> None:
    token = stack.token(["tools:read", "tools:call"])
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), token)
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(token, version=HANDSHAKE, session=session),
            json={"jsonrpc": "2.0", "method": method, "params": params},
        )
    text = f"Invalid Request: {method!r} is not a notification protocol 2025-11-25 defines; a request needs an id"
    _assert_refused(response, stack, method, text)


@pytest.mark.parametrize(
    "method", ["notifications/made_up", "notifications/initialized", "notifications/roots/list_changed", "tasks/get"]
)
async def test_notification_the_revision_does_not_define_is_refused_in_protocol_2026_07_28(
    stack: Stack, http: httpx2.AsyncClient, method: str
) -> None:
    # notifications/initialized and roots/list_changed exist only in the handshake revisions.
    token = stack.token()
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(), headers=modern_headers(token, method), json=_modern_message(method, {})
        )
    text = f"Invalid Request: {method!r} is not a notification protocol 2026-07-28 defines; a request needs an id"
    _assert_refused(response, stack, method, text)


@pytest.mark.parametrize("method", ["notifications/made_up", "notifications/tools/list_changed", "made/up"])
async def test_unknown_notification_is_refused_in_the_handshake_era(
    stack: Stack, http: httpx2.AsyncClient, method: str
) -> None:
    token = stack.token()
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), token)
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(token, version=HANDSHAKE, session=session),
            json={"jsonrpc": "2.0", "method": method},
        )
    text = f"Invalid Request: {method!r} is not a notification protocol 2025-11-25 defines; a request needs an id"
    _assert_refused(response, stack, method, text)


async def test_spec_notification_of_the_handshake_era_is_still_forwarded(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    token = stack.token()
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), token)
        before = len(stack.tap.calls("notifications/roots/list_changed"))
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(token, version=HANDSHAKE, session=session),
            json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        )
    assert response.status_code == 202
    assert len(stack.tap.calls("notifications/roots/list_changed")) == before + 1


@pytest.mark.parametrize("answer", [{"result": {}}, {"error": {"code": -1, "message": "no"}}])
async def test_client_response_is_refused_in_protocol_2026_07_28_which_has_no_server_requests(
    stack: Stack, http: httpx2.AsyncClient, answer: dict[str, Any]
) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=modern_headers(stack.token(), "tools/call"),
            json={"jsonrpc": "2.0", "id": 1, **answer},
        )
    assert response.status_code == 400
    assert json_error(response) == {
        "code": -32600,
        "message": "Invalid Request: protocol 2026-07-28 has no client responses; "
        "answer input requests by retrying the request with inputResponses",
    }
    assert _last_refusal(stack).policy_rule == "message_shape"
