"""An upstream that fails, hangs or sends garbage: the client gets a clean error and nothing raw."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sink import MemoryAuditSink
from tests._mcp import MODERN_META, modern_headers
from tests._servers import refused_url
from tests._stack import Stack, gateway_stack
from tests.proxy._support import (
    Receive,
    Scope,
    Script,
    ScriptedUpstream,
    Send,
    bare_gateway,
    json_error,
    modern_call_body,
    parse_events,
    progress_for,
    result_for,
    send_chunk,
    send_raw,
    sse_message,
    start_sse,
)

pytestmark = pytest.mark.anyio

SECRET = "UPSTREAM-INTERNALS"  # what a misbehaving upstream leaks; it must never reach the client
_SCRIPTS: dict[str, Script] = {}


def script(name: str) -> Callable[[Script], Script]:
    def register(function: Script) -> Script:
        _SCRIPTS[name] = function
        return function

    return register


async def dispatch(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await _SCRIPTS[body["params"]["name"]](scope, receive, send, body)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    upstream = ScriptedUpstream(dispatch)
    audit = MemoryAuditSink()
    async with gateway_stack(
        tmp_path_factory.mktemp("faults"),
        upstream_app=upstream,
        server_extra="read_timeout_seconds = 0.5",
        audit=audit,
    ) as stack:
        stack.extra.update(upstream=upstream, audit=audit)
        yield stack


async def call(stack: Stack, tool: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            return await http.post(
                stack.mcp_url(),
                headers=modern_headers(stack.token(), "tools/call", tool),
                json=modern_call_body(tool, {}),
            )


def outcome_of(stack: Stack, tool: str) -> tuple[str | None, int | None]:
    audit: MemoryAuditSink = stack.extra["audit"]
    (record,) = [r for r in audit.records if r.tool == tool and r.phase == "outcome"]
    return record.outcome, record.http_status


def assert_bad_gateway(response: httpx2.Response, message: str) -> None:
    assert response.status_code == 502
    assert json_error(response) == {"code": -32603, "message": message}
    assert response.json()["id"] == 1
    assert SECRET not in response.text


@script("invalid_json")
async def _invalid_json(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 200, b'{"jsonrpc": "2.0", "id": 1, "result": ' + SECRET.encode())


async def test_upstream_invalid_json_is_502_and_nothing_raw_is_relayed(stack: Stack) -> None:
    response = await call(stack, "invalid_json")
    assert_bad_gateway(response, "Bad Gateway: the upstream sent an invalid JSON-RPC message")
    assert outcome_of(stack, "invalid_json") == ("upstream_error", 502)


@script("wrong_jsonrpc")
async def _wrong_jsonrpc(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 200, json.dumps({"jsonrpc": "1.0", "id": body["id"], "result": {"x": SECRET}}).encode())


async def test_upstream_message_with_wrong_jsonrpc_version_is_502(stack: Stack) -> None:
    response = await call(stack, "wrong_jsonrpc")
    assert_bad_gateway(response, "Bad Gateway: the upstream sent an invalid JSON-RPC message")


@script("unknown_id")
async def _unknown_id(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 200, json.dumps({"jsonrpc": "2.0", "id": 999, "result": {"x": SECRET}}).encode())


async def test_upstream_response_to_an_id_it_never_received_is_502(stack: Stack) -> None:
    response = await call(stack, "unknown_id")
    assert_bad_gateway(response, "Bad Gateway: the upstream sent an invalid JSON-RPC message")


@script("html")
async def _html(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 200, f"<html>{SECRET}</html>".encode(), b"text/html")


async def test_upstream_non_json_content_type_is_502(stack: Stack) -> None:
    response = await call(stack, "html")
    assert_bad_gateway(response, "Bad Gateway: the upstream answered 200 with an unusable body")


@script("unauthorized")
async def _unauthorized(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": SECRET}}
    await send_raw(send, 401, json.dumps(error).encode())


async def test_upstream_401_is_502_never_a_challenge_to_the_client(stack: Stack) -> None:
    response = await call(stack, "unauthorized")
    assert_bad_gateway(response, "Bad Gateway: the upstream refused the gateway's credentials (401)")
    assert "www-authenticate" not in response.headers


@script("accepted")
async def _accepted(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 202, b"", None)


async def test_upstream_202_for_a_request_is_502(stack: Stack) -> None:
    response = await call(stack, "accepted")
    assert_bad_gateway(response, "Bad Gateway: the upstream answered 202 without a response")


@script("server_error")
async def _server_error(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    error = {
        "jsonrpc": "2.0",
        "id": "spoofed",
        "error": {"code": -32021, "message": "x" * 2000, "data": {"requiredCapabilities": {"sampling": {}}}},
        "extra": SECRET,
    }
    await send_raw(send, 400, json.dumps(error).encode())


async def test_upstream_http_error_is_relayed_only_as_a_reserialized_json_rpc_error(stack: Stack) -> None:
    response = await call(stack, "server_error")
    assert response.status_code == 400
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32021, "message": "x" * 500, "data": {"requiredCapabilities": {"sampling": {}}}},
    }


@script("hang")
async def _hang(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def test_upstream_that_never_answers_is_504(stack: Stack) -> None:
    response = await call(stack, "hang")
    assert response.status_code == 504
    assert json_error(response) == {"code": -32603, "message": "Gateway Timeout: the upstream did not answer in time"}
    assert outcome_of(stack, "hang") == ("timeout", 504)


async def stream_call(stack: Stack, tool: str) -> tuple[httpx2.Response, list[dict[str, Any]]]:
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream(
                "POST",
                stack.mcp_url(),
                headers=modern_headers(stack.token(), "tools/call", tool),
                json=modern_call_body(tool, {}),
            ) as response:
                text = (await response.aread()).decode()
    assert SECRET not in text
    return response, [event.message() for event in parse_events(text) if event.data]


@script("hang_mid_stream")
async def _hang_mid_stream(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await start_sse(send)
    await send_chunk(send, sse_message(progress_for(body, 1)))
    while (await receive())["type"] != "http.disconnect":
        pass


async def test_upstream_that_stops_mid_stream_ends_with_a_timeout_error_event(stack: Stack) -> None:
    response, messages = await stream_call(stack, "hang_mid_stream")
    assert response.status_code == 200
    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[-1] == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": "Gateway Timeout: the upstream stopped sending"},
    }
    assert outcome_of(stack, "hang_mid_stream") == ("timeout", 200)


@script("half_event")
async def _half_event(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await start_sse(send)
    await send_chunk(send, sse_message(progress_for(body, 1)))
    await send_chunk(send, b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"' + SECRET.encode(), more=False)


async def test_upstream_stream_ending_in_half_an_event_ends_with_an_error_event(stack: Stack) -> None:
    response, messages = await stream_call(stack, "half_event")
    assert response.status_code == 200
    assert messages[-1]["error"] == {"code": -32603, "message": "Bad Gateway: the upstream sent a malformed stream"}
    assert len(messages) == 2
    assert outcome_of(stack, "half_event") == ("upstream_error", 200)


@script("stream_garbage")
async def _stream_garbage(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await start_sse(send)
    await send_chunk(send, f"data: not json {SECRET}\n\n".encode())
    await send_chunk(send, sse_message({"jsonrpc": "1.0", "method": "notifications/progress", "params": {}}))
    await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": 999, "result": {"x": SECRET}}))
    await send_chunk(send, f": {SECRET} comment\nx-unknown: {SECRET}\n\n".encode())
    await send_chunk(send, sse_message(result_for(body, "the real answer"), event_id="e1"))
    await send_chunk(send, sse_message({"jsonrpc": "2.0", "id": body["id"], "result": {"x": SECRET}}), more=False)


async def test_garbage_events_wrong_ids_and_second_answers_on_a_stream_are_dropped(stack: Stack) -> None:
    response, messages = await stream_call(stack, "stream_garbage")
    assert response.status_code == 200
    assert messages == [result_for({"id": 1}, "the real answer")]
    assert outcome_of(stack, "stream_garbage") == ("ok", 200)


async def test_stream_without_a_response_ends_with_an_error_event(stack: Stack) -> None:
    _, messages = await stream_call(stack, "stream_no_answer")
    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[-1:] == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32603, "message": "Bad Gateway: the upstream ended the stream without a valid response"},
        }
    ]


@script("stream_no_answer")
async def _stream_no_answer(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    # An event id does not make a 2026-07-28 stream resumable: that era has no Last-Event-ID.
    await start_sse(send)
    await send_chunk(send, sse_message(progress_for(body, 1), event_id="7"))
    await send_chunk(send, b"", more=False)


async def test_sse_responses_carry_x_accel_buffering_no(stack: Stack) -> None:
    response, _ = await stream_call(stack, "stream_garbage")
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"


async def test_unreachable_upstream_is_502(stack: Stack, tmp_path: Path) -> None:
    issuer = stack.issuer.issuer
    async with bare_gateway(
        tmp_path, upstream_url=f"{refused_url()}/mcp", issuer=issuer, jwks_uri=f"{issuer}/jwks.json"
    ) as gw:
        token = stack.token(resource=f"{gw.base_url}/everything/mcp")
        async with httpx2.AsyncClient(timeout=10) as http:
            with anyio.fail_after(10):
                response = await http.post(
                    f"{gw.base_url}/everything/mcp",
                    headers=modern_headers(token, "tools/call", "anything"),
                    json=modern_call_body("anything", {}),
                )
    assert response.status_code == 502
    assert json_error(response) == {"code": -32603, "message": "Bad Gateway: the upstream failed"}
    (outcome,) = [r for r in gw.audit.records if r.phase == "outcome"]
    assert (outcome.outcome, outcome.http_status, outcome.detail) == (
        "upstream_error",
        502,
        '{"error": "UpstreamConnectError"}',
    )


@script("not_json_rpc_error")
async def _not_json_rpc_error(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 500, json.dumps({"detail": SECRET}).encode())


async def test_upstream_http_error_without_a_json_rpc_error_is_502(stack: Stack) -> None:
    response = await call(stack, "not_json_rpc_error")
    assert_bad_gateway(response, "Bad Gateway: the upstream answered 500")


@script("oversized")
async def _oversized(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await send_raw(send, 200, b'{"jsonrpc":"2.0","id":1,"result":{"x":"' + b"x" * (5 * 1024 * 1024) + b'"}}')


async def test_upstream_body_over_the_cap_is_502(stack: Stack) -> None:
    response = await call(stack, "oversized")
    assert_bad_gateway(response, "Bad Gateway: the upstream's response could not be read")
    assert outcome_of(stack, "oversized") == ("upstream_error", 502)


@script("reset_mid_stream")
async def _reset_mid_stream(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    await start_sse(send)
    await send_chunk(send, sse_message(progress_for(body, 1)))
    raise ConnectionResetError("the upstream process died")  # uvicorn drops the connection mid-body


async def test_upstream_connection_lost_mid_stream_ends_with_an_error_event(stack: Stack) -> None:
    response, messages = await stream_call(stack, "reset_mid_stream")
    assert response.status_code == 200
    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[-1]["error"]["code"] == -32603
    assert messages[-1]["error"]["message"].startswith("Bad Gateway: the upstream")
    assert outcome_of(stack, "reset_mid_stream") == ("upstream_error", 200)


async def _list_with_a_lone_surrogate(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    # Valid JSON syntax (RFC 8259 §7 allows any \uXXXX escape), outside I-JSON: a lone high surrogate.
    tool = {"name": "echo", "description": "odd \\ud800 text", "inputSchema": {"type": "object"}}
    listed = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": [tool]}})
    await send_raw(send, 200, listed.replace("\\\\ud800", "\\ud800").encode())


async def test_a_list_result_with_a_lone_surrogate_is_relayed_as_valid_json_not_a_crash(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(_list_with_a_lone_surrogate)
    async with gateway_stack(tmp_path, upstream_app=upstream) as stack, httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(),
                headers=modern_headers(stack.token(), "tools/list"),
                json={"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": dict(MODERN_META)}},
            )
    assert response.status_code == 200, response.text
    (tool,) = response.json()["result"]["tools"]
    assert tool["description"] == "odd \ud800 text"
    response.content.decode("utf-8")  # well-formed UTF-8: the surrogate travels as an escape


def _redirect(status: int) -> Script:
    async def answer(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        # A redirect whose body is a perfectly valid answer: neither may reach the client.
        payload = json.dumps(result_for(body, SECRET)).encode()
        await send_raw(send, status, payload, headers=[(b"location", b"http://attacker.invalid/mcp")])

    return answer


for _status in (301, 302, 303, 307, 308):
    script(f"redirect_{_status}")(_redirect(_status))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_upstream_redirects_are_neither_followed_nor_relayed(stack: Stack, status: int) -> None:
    upstream: ScriptedUpstream = stack.extra["upstream"]
    before = len(upstream.bodies)
    response = await call(stack, f"redirect_{status}")
    assert_bad_gateway(response, f"Bad Gateway: the upstream redirected ({status}); the gateway follows no redirects")
    assert "location" not in response.headers
    assert len(upstream.bodies) == before + 1  # asked once, never at the Location
    audit: MemoryAuditSink = stack.extra["audit"]
    (record,) = [r for r in audit.records if r.tool == f"redirect_{status}" and r.phase == "outcome"]
    assert (record.outcome, record.http_status) == ("upstream_error", 502)
    assert record.detail is not None and json.loads(record.detail) == {"error": "upstream_redirect"}
