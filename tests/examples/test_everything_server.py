"""The example upstream server, spoken to by the SDK's client over real HTTP, in both protocol eras."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    TextContent,
    TextResourceContents,
)
from starlette.types import Message, Receive, Scope, Send

from examples.everything_server import StripHeaderWhitespace
from tests._servers import run_example_server

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]
TIMEOUT = 10


@pytest.fixture
async def mcp_url() -> AsyncIterator[str]:
    async with run_example_server() as url:
        yield url


def _text(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


@pytest.mark.parametrize("mode", MODES)
async def test_lists_the_conformance_fixtures_and_the_gateway_tools(mcp_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"echo", "emit_progress", "ask_model", "ask_user", "delete_everything", "show_request_headers"} <= set(tools)
    assert {"test_simple_text", "test_sampling", "test_missing_capability", "json_schema_2020_12_tool"} <= set(tools)
    annotations = tools["delete_everything"].annotations
    assert annotations is not None and annotations.destructive_hint is True


@pytest.mark.parametrize("mode", MODES)
async def test_echo_returns_the_message(mcp_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode) as client:
            result = await client.call_tool("echo", {"message": "héllo, gateway"})
    assert not result.is_error
    assert _text(result) == "héllo, gateway"


@pytest.mark.parametrize("mode", MODES)
async def test_reads_a_static_resource_and_a_template(mcp_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode) as client:
            static = await client.read_resource("test://static-text")
            templated = await client.read_resource("test://template/42/data")
    assert isinstance(static.contents[0], TextResourceContents)
    assert static.contents[0].text == "This is the content of the static text resource."
    assert isinstance(templated.contents[0], TextResourceContents)
    assert json.loads(templated.contents[0].text)["id"] == "42"


@pytest.mark.parametrize("mode", MODES)
async def test_gets_a_prompt_with_its_arguments_filled_in(mcp_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode) as client:
            prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
    content = prompt.messages[0].content
    assert isinstance(content, TextContent)
    assert content.text == "Prompt with arguments: arg1='a', arg2='b'"


@pytest.mark.parametrize("mode", MODES)
async def test_emit_progress_sends_one_notification_per_step(mcp_url: str, mode: str) -> None:
    received: list[tuple[float, float | None, str | None]] = []
    all_received = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((progress, total, message))
        if len(received) == 4:
            all_received.set()

    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode) as client:
            result = await client.call_tool("emit_progress", {"steps": 4}, progress_callback=on_progress)
            await all_received.wait()  # progress callbacks run as their own tasks, possibly after the result
    assert _text(result) == "emitted 4 progress notifications"
    assert received == [(float(n), 4.0, f"step {n} of 4") for n in range(1, 5)]


@pytest.mark.parametrize("mode", MODES)
async def test_ask_model_returns_what_the_clients_model_answered(mcp_url: str, mode: str) -> None:
    prompts: list[str] = []

    async def sample(context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        prompts.append(content.text if isinstance(content, TextContent) else "?")
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="Paris"), model="stub")

    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode, sampling_callback=sample) as client:
            result = await client.call_tool("ask_model", {"prompt": "Capital of France?"})
    assert _text(result) == "model said: Paris"
    assert prompts == ["Capital of France?"]


@pytest.mark.parametrize("mode", MODES)
async def test_ask_model_is_refused_when_the_client_cannot_sample(mcp_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("ask_model", {"prompt": "anything"})
    assert refused.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY


@pytest.mark.parametrize("mode", MODES)
async def test_ask_user_returns_the_users_answer(mcp_url: str, mode: str) -> None:
    questions: list[str] = []

    async def elicit(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params.message)
        return ElicitResult(action="accept", content={"answer": "blue"})

    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode=mode, elicitation_callback=elicit) as client:
            result = await client.call_tool("ask_user", {"question": "Favourite colour?"})
    assert _text(result) == "user action=accept, answer=blue"
    assert questions == ["Favourite colour?"]


async def test_delete_everything_deletes_nothing(mcp_url: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode="2026-07-28") as client:
            result = await client.call_tool("delete_everything", {})
    assert _text(result) == "nothing deleted"


async def test_show_request_headers_reports_what_the_server_received(mcp_url: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(mcp_url, mode="2026-07-28") as client:
            headers = json.loads(_text(await client.call_tool("show_request_headers", {})))
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-name"] == "show_request_headers"
    assert headers["host"] == mcp_url.split("/")[2]


async def test_a_foreign_host_header_is_refused(mcp_url: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    with anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient() as http:
            response = await http.post(mcp_url, json=body, headers={"Host": "attacker.example"})
    assert response.status_code == 421


async def test_header_values_lose_the_whitespace_around_them() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    headers = [(b"mcp-name", b"echo \t"), (b"x-other", b"  a b  ")]
    await StripHeaderWhitespace(app)({"type": "http", "headers": headers}, receive, send)
    assert seen[0]["headers"] == [(b"mcp-name", b"echo"), (b"x-other", b"a b")]
