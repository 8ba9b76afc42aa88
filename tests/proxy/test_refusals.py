"""Every request the gateway refuses before forwarding: the status, the message, and nothing upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import httpx2
import pytest

from examples.everything_server import build_app
from tests._mcp import HANDSHAKE, MODERN, MODERN_META, initialize_body, modern_headers, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import EarlyTap, call_body, json_error, modern_call_body

pytestmark = pytest.mark.anyio

CAP = 300_000


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    directory = tmp_path_factory.mktemp("refusals")
    tap = EarlyTap(build_app())
    async with gateway_stack(directory, gateway_extra=f"max_body_bytes = {CAP}", upstream_app=tap) as stack:
        stack.extra["early"] = tap
        yield stack


@contextmanager
def nothing_forwarded(stack: Stack) -> Iterator[None]:
    before = len(stack.tap.requests)
    yield
    assert len(stack.tap.requests) == before, stack.tap.requests[before:]


async def test_unsupported_protocol_version_is_400_listing_the_supported_ones(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(stack.token(), version="2024-11-05"),
            json=call_body("echo", {"message": "x"}),
        )
    assert response.status_code == 400
    error = json_error(response)
    assert error["code"] == -32022
    # data.supported is what a request may name without a handshake, as server/discover reports it.
    assert error["data"] == {"supported": ["2026-07-28"], "requested": "2024-11-05"}
    assert error["message"] == (
        "Unsupported protocol version '2024-11-05'; supported: 2026-07-28, "
        "or 2025-11-25 and 2025-06-18 after initialize"
    )


async def test_missing_protocol_version_after_initialize_is_400_as_2025_03_26(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(), headers=post_headers(stack.token()), json=call_body("echo", {"message": "x"})
        )
    assert response.status_code == 400
    assert json_error(response)["data"] == {"supported": ["2026-07-28"], "requested": "2025-03-26"}


async def test_unsupported_protocol_version_on_get_is_400(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.get(
            stack.mcp_url(),
            headers={**post_headers(stack.token(), version="1999-01-01"), "accept": "text/event-stream"},
        )
    assert response.status_code == 400
    assert json_error(response)["code"] == -32022


@pytest.mark.parametrize(
    ("method", "name", "message"),
    [
        ("tools/list", "echo", "mcp-method header does not match the request body's method"),
        ("tools/call", "delete_everything", "mcp-name header does not match the request body's 'name' parameter"),
        ("tools/call", None, "mcp-name header does not match the request body's 'name' parameter"),
    ],
)
async def test_mcp_method_or_name_header_disagreeing_with_the_body_is_400_and_not_forwarded(
    stack: Stack, http: httpx2.AsyncClient, method: str, name: str | None, message: str
) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=modern_headers(stack.token(["tools:read", "admin"]), method, name),
            json=modern_call_body("echo", {"message": "x"}),
        )
    assert response.status_code == 400
    assert json_error(response) == {"code": -32020, "message": message}
    assert response.json()["id"] == 1


async def test_duplicated_mcp_name_header_is_400(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack):
        headers = list(modern_headers(stack.token(["tools:read"]), "tools/call", "echo").items())
        headers.append(("mcp-name", "delete_everything"))
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(),
                headers=headers,
                content=json.dumps(modern_call_body("echo", {"message": "x"})).encode(),
            )
    assert response.status_code == 400
    assert json_error(response)["code"] == -32020


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_and_delete_in_protocol_2026_07_28_are_405(
    stack: Stack, http: httpx2.AsyncClient, method: str
) -> None:
    with nothing_forwarded(stack):
        headers = {**post_headers(stack.token(), version=MODERN), "accept": "text/event-stream"}
        with anyio.fail_after(10):
            response = await http.request(method, stack.mcp_url(), headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert json_error(response)["message"] == "Method Not Allowed in protocol 2026-07-28"


async def test_other_http_methods_are_405(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.put(stack.mcp_url(), headers=post_headers(stack.token()), content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, DELETE"


async def test_notification_is_forwarded_and_answered_202_in_protocol_2026_07_28(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
    with anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(), headers=modern_headers(stack.token(), "notifications/cancelled"), json=body
        )
    assert response.status_code == 202
    assert response.content == b""
    assert stack.extra["early"].calls("notifications/cancelled") == [body]


async def test_notification_is_forwarded_and_answered_202_in_the_handshake_era(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    before = len(stack.extra["early"].calls("notifications/initialized"))
    with anyio.fail_after(10):
        await open_session(http, stack.mcp_url(), stack.token())  # asserts that notifications/initialized got 202
    assert len(stack.extra["early"].calls("notifications/initialized")) == before + 1


async def test_host_not_served_here_is_421(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers={**post_headers(stack.token()), "host": "rebound.attacker.example"},
            json=initialize_body(),
        )
    assert response.status_code == 421
    assert json_error(response)["message"] == "Misdirected request: Host is not served here"


async def test_foreign_origin_is_403(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers={**post_headers(stack.token()), "origin": "http://attacker.example"},
            json=initialize_body(),
        )
    assert response.status_code == 403
    assert json_error(response)["message"] == "Forbidden: Origin is not allowed"


async def test_own_origin_is_served(stack: Stack, http: httpx2.AsyncClient) -> None:
    before = len(stack.tap.requests)
    with anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(), headers={**post_headers(stack.token()), "origin": stack.base_url}, json=initialize_body()
        )
    assert response.status_code == 200
    assert len(stack.tap.requests) == before + 1


async def test_body_over_the_cap_with_content_length_is_413(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(stack.token()),
            json=call_body("echo", {"message": "x" * (CAP + 1)}),
        )
    assert response.status_code == 413
    assert json_error(response)["message"] == f"Payload Too Large: the body limit is {CAP} bytes"


async def test_chunked_body_over_the_cap_is_413(stack: Stack, http: httpx2.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"'
        for _ in range(CAP // 512 + 2):
            yield b"x" * 512

    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=post_headers(stack.token()), content=body())
    assert response.status_code == 413
    assert json_error(response)["message"] == f"Payload Too Large: the body limit is {CAP} bytes"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_wrong_content_type_is_415(stack: Stack, http: httpx2.AsyncClient, content_type: str) -> None:
    with nothing_forwarded(stack):
        headers = {**post_headers(stack.token()), "content-type": content_type}
        with anyio.fail_after(10):
            response = await http.post(stack.mcp_url(), headers=headers, content=json.dumps(initialize_body()))
    assert response.status_code == 415
    assert json_error(response)["message"] == "Unsupported Media Type: POST bodies must be application/json"


async def test_accept_without_json_is_406(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack):
        headers = {**post_headers(stack.token()), "accept": "text/event-stream"}
        with anyio.fail_after(10):
            response = await http.post(stack.mcp_url(), headers=headers, json=initialize_body())
    assert response.status_code == 406
    assert json_error(response)["message"] == "Not Acceptable: Accept must include application/json"


async def test_get_without_event_stream_accept_is_406(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack):
        headers = {**post_headers(stack.token(), version=HANDSHAKE), "accept": "application/json"}
        with anyio.fail_after(10):
            response = await http.get(stack.mcp_url(), headers=headers)
    assert response.status_code == 406
    assert json_error(response)["message"] == "Not Acceptable: GET requires Accept: text/event-stream"


async def test_batch_is_400(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack):
        batch = [call_body("echo", {"message": "a"}, 1), call_body("delete_everything", {}, 2)]
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(), headers=post_headers(stack.token(), version=HANDSHAKE), json=batch
            )
    assert response.status_code == 400
    assert json_error(response) == {"code": -32600, "message": "Invalid Request: JSON-RPC batches are not supported"}


@pytest.mark.parametrize("depth", [65, 100_000])
async def test_absurdly_nested_json_is_400_not_a_recursion_error(
    stack: Stack, http: httpx2.AsyncClient, depth: int
) -> None:
    nested = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":'
    nested += b"[" * depth + b"]" * depth + b"}}}"
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=post_headers(stack.token(), version=MODERN), content=nested)
    assert response.status_code == 400
    error = json_error(response)
    assert error["code"] == -32700
    assert error["message"].startswith("Parse error:")


async def test_body_that_is_not_json_is_400_parse_error(stack: Stack, http: httpx2.AsyncClient) -> None:
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=post_headers(stack.token()), content=b"{not json")
    assert response.status_code == 400
    assert json_error(response) == {"code": -32700, "message": "Parse error: the body is not valid JSON"}


async def test_notification_whose_mcp_method_header_disagrees_is_400(stack: Stack, http: httpx2.AsyncClient) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=modern_headers(stack.token(), "tools/call"), json=body)
    assert response.status_code == 400
    assert json_error(response) == {"code": -32020, "message": "mcp-method header does not match the body"}


@pytest.mark.parametrize(
    "method", ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"]
)
async def test_method_removed_in_2026_07_28_is_404_method_not_found(
    stack: Stack, http: httpx2.AsyncClient, method: str
) -> None:
    body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": {"_meta": dict(MODERN_META)}}
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=modern_headers(stack.token(), method), json=body)
    assert response.status_code == 404
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 5,
        "error": {"code": -32601, "message": "Method not found", "data": method},
    }


@pytest.mark.parametrize(("version", "status"), [(MODERN, 404), (HANDSHAKE, 200)])
async def test_method_the_policy_does_not_know_is_method_not_found(
    stack: Stack, http: httpx2.AsyncClient, version: str, status: int
) -> None:
    token = stack.token()
    body: dict[str, object] = {"jsonrpc": "2.0", "id": 6, "method": "tasks/get", "params": {"taskId": "t1"}}
    if version == MODERN:
        headers = modern_headers(token, "tasks/get")
        body["params"] = {"taskId": "t1", "_meta": dict(MODERN_META)}
    else:
        with anyio.fail_after(10):
            headers = post_headers(token, version=HANDSHAKE, session=await open_session(http, stack.mcp_url(), token))
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=headers, json=body)
    assert response.status_code == status
    assert response.json()["error"] == {"code": -32601, "message": "Method not found", "data": "tasks/get"}


async def test_tool_call_without_a_name_is_400_invalid_params_with_its_id(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    body = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"arguments": {}}}
    token = stack.token()
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), token)
    headers = post_headers(token, version=HANDSHAKE, session=session)
    with nothing_forwarded(stack), anyio.fail_after(10):
        response = await http.post(stack.mcp_url(), headers=headers, json=body)
    assert response.status_code == 400
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 8,
        "error": {"code": -32602, "message": "Invalid params: tools/call needs a string params.name"},
    }
