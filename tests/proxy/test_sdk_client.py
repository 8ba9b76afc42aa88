"""The `mcp` SDK's own client, in both protocol eras, uses the example upstream through the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp.client.session import ClientRequestContext

from examples.everything_server import build_app
from tests._mcp import HANDSHAKE, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import EarlyTap, call_body, json_error, sdk_client

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]
EVERY_SCOPE = ["tools:read", "tools:call", "resources:read", "prompts:read"]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tap = EarlyTap(build_app())
    async with gateway_stack(tmp_path_factory.mktemp("sdk"), upstream_app=tap) as stack:
        stack.extra["early"] = tap
        yield stack


def _forwarded(stack: Stack, method: str) -> list[dict[str, object]]:
    tap: EarlyTap = stack.extra["early"]
    return tap.calls(method)


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_lists_and_uses_tools_resources_and_prompts(stack: Stack, mode: str) -> None:
    with anyio.fail_after(20):
        async with sdk_client(stack, stack.token(EVERY_SCOPE), mode=mode) as client:
            tools = await client.list_tools()
            echoed = await client.call_tool("echo", {"message": f"through the gateway in {mode}"})
            resources = await client.list_resources()
            text = await client.read_resource("test://static-text")
            prompts = await client.list_prompts()
            prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "one", "arg2": "two"})
    assert {"echo", "emit_progress", "ask_model"} <= {tool.name for tool in tools.tools}
    assert echoed.content[0].text == f"through the gateway in {mode}"  # type: ignore[union-attr]
    assert "test://static-text" in {str(resource.uri) for resource in resources.resources}
    assert text.contents[0].text == "This is the content of the static text resource."  # type: ignore[union-attr]
    assert "test_prompt_with_arguments" in {p.name for p in prompts.prompts}
    assert prompt.messages[0].content.text == "Prompt with arguments: arg1='one', arg2='two'"  # type: ignore[union-attr]
    echo_calls = [c for c in _forwarded(stack, "tools/call") if c["params"]["name"] == "echo"]  # type: ignore[index]
    assert f"through the gateway in {mode}" in [c["params"]["arguments"]["message"] for c in echo_calls]  # type: ignore[index]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_reach_the_sdk_clients_progress_callback(stack: Stack, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    with anyio.fail_after(20):
        async with sdk_client(stack, stack.token(), mode=mode) as client:
            result = await client.call_tool("emit_progress", {"steps": 3}, progress_callback=on_progress)
    assert result.content[0].text == "emitted 3 progress notifications"  # type: ignore[union-attr]
    assert seen == [(1, 3, "step 1 of 3"), (2, 3, "step 2 of 3"), (3, 3, "step 3 of 3")]


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_request_reaches_the_sdk_clients_sampling_callback(stack: Stack, mode: str) -> None:
    prompts: list[str] = []

    async def sample(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        prompts.append(params.messages[0].content.text)  # type: ignore[union-attr]
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="forty-two"), model="test-model"
        )

    with anyio.fail_after(20):
        async with sdk_client(stack, stack.token(), mode=mode, sampling_callback=sample) as client:
            result = await client.call_tool("ask_model", {"prompt": "the answer?"})
    assert prompts == ["the answer?"]
    assert result.content[0].text == "model said: forty-two"  # type: ignore[union-attr]


async def test_session_terminated_by_the_sdk_client_answers_404_afterwards(stack: Stack) -> None:
    session_ids: set[str] = set()

    def remember(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            session_ids.add(response.headers["mcp-session-id"])

    token = stack.token()
    deletes = [method for method, _, _ in stack.tap.requests].count("DELETE")
    with anyio.fail_after(20):
        async with sdk_client(stack, token, mode="legacy", on_response=remember) as client:
            await client.call_tool("echo", {"message": "before"})
        # Leaving the client sends DELETE with the session id (terminate_on_close).
        assert [method for method, _, _ in stack.tap.requests].count("DELETE") == deletes + 1
        (session,) = session_ids
        async with httpx2.AsyncClient(timeout=10) as http:
            after = await http.post(
                stack.mcp_url(),
                headers=post_headers(token, version=HANDSHAKE, session=session),
                json=call_body("echo", {"message": "after termination"}),
            )
    assert after.status_code == 404
    assert json_error(after) == {"code": -32001, "message": "Session not found"}
    # The gateway cannot revoke a sealed id by itself: the upstream said 404, and the client hears it.
    last = _forwarded(stack, "tools/call")[-1]
    assert last["params"] == {"name": "echo", "arguments": {"message": "after termination"}}


async def test_sdk_client_resumes_a_stream_the_upstream_closes_mid_call(stack: Stack) -> None:
    # SEP-1699 polling: the upstream closes the POST stream after an event with an id; the client comes
    # back with GET + Last-Event-ID and receives the rest of the call there.
    resumed_before = sum(1 for method, h, _ in stack.tap.requests if method == "GET" and "last-event-id" in h)
    with anyio.fail_after(20):
        async with sdk_client(stack, stack.token(), mode="legacy") as client:
            result = await client.call_tool("test_reconnection", {})
    assert not result.is_error
    assert result.content[0].text == "Reconnection test completed"  # type: ignore[union-attr]
    resumed = sum(1 for method, h, _ in stack.tap.requests if method == "GET" and "last-event-id" in h)
    assert resumed == resumed_before + 1


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_works_in_front_of_an_upstream_that_answers_in_json(tmp_path: Path, mode: str) -> None:
    from examples.everything_server import build_server, loopback_security

    upstream = build_server().streamable_http_app(
        streamable_http_path="/mcp", json_response=True, transport_security=loopback_security()
    )
    async with gateway_stack(tmp_path, upstream_app=upstream) as json_stack:
        with anyio.fail_after(20):
            async with sdk_client(json_stack, json_stack.token(), mode=mode) as client:
                result = await client.call_tool("echo", {"message": "json all the way"})
    assert result.content[0].text == "json all the way"  # type: ignore[union-attr]
