"""Server-to-client requests the allowlist does not permit never reach the client, in either era."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from examples.everything_server import build_app
from tests._stack import DEFAULT_ALLOWLIST, Stack, gateway_stack
from tests.proxy._support import EarlyTap, sdk_client

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tap = EarlyTap(build_app())
    allowlist = 'server_requests = ["elicitation"]\n' + DEFAULT_ALLOWLIST
    async with gateway_stack(
        tmp_path_factory.mktemp("server-requests"), allowlist=allowlist, upstream_app=tap
    ) as stack:
        stack.extra["early"] = tap
        yield stack


class Callbacks:
    def __init__(self) -> None:
        self.sampled: list[str] = []
        self.elicited: list[str] = []

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampled.append(params.messages[0].content.text)  # type: ignore[union-attr]
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="no"), model="m")

    async def elicit(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    def client(self, stack: Stack, mode: str) -> AbstractAsyncContextManager[Client]:
        """The SDK client through the gateway, answering sampling and elicitation with these callbacks."""
        return sdk_client(
            stack, stack.token(), mode=mode, sampling_callback=self.sample, elicitation_callback=self.elicit
        )


async def _ask_model(stack: Stack, mode: str) -> tuple[Callbacks, MCPError]:
    """Call the tool that asks the client to sample, which the allowlist does not permit; the call's error."""
    callbacks = Callbacks()
    with anyio.fail_after(10):  # the upstream waits for an answer: without one, this would hang
        async with callbacks.client(stack, mode) as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool("ask_model", {"prompt": "may I?"})
    return callbacks, raised.value


async def test_refused_sampling_request_is_answered_upstream_by_the_gateway_not_relayed(stack: Stack) -> None:
    tap: EarlyTap = stack.extra["early"]
    callbacks, error = await _ask_model(stack, "legacy")
    assert callbacks.sampled == []
    # The upstream's own error, caused by the gateway's answer to its sampling request:
    assert error.error.message == "sampling/createMessage is not permitted by the gateway"
    answers = [m for m in tap.messages if "error" in m and "method" not in m]
    assert [a["error"] for a in answers] == [
        {"code": -32600, "message": "sampling/createMessage is not permitted by the gateway"}
    ]


async def test_refused_sampling_input_request_in_2026_07_28_becomes_an_error(stack: Stack) -> None:
    callbacks, error = await _ask_model(stack, "2026-07-28")
    assert callbacks.sampled == []
    assert error.error.message == "sampling/createMessage is not permitted by the gateway"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_permitted_elicitation_request_is_relayed_in_either_era(stack: Stack, mode: str) -> None:
    # Handshake era: a server-to-client request on the call's stream; 2026-07-28: an input request.
    callbacks = Callbacks()
    with anyio.fail_after(10):
        async with callbacks.client(stack, mode) as client:
            result = await client.call_tool("ask_user", {"question": "favourite colour?"})
    assert callbacks.elicited == ["favourite colour?"]
    assert result.content[0].text == "user action=accept, answer=blue"  # type: ignore[union-attr]
