"""The whole stack answers an SDK client in both eras (the smallest end-to-end check)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests._stack import gateway_stack

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_sdk_client_lists_and_calls_echo_through_the_gateway(tmp_path: Path, mode: str) -> None:
    async with gateway_stack(tmp_path) as stack:
        with anyio.fail_after(20):
            async with stack.client(stack.token(["tools:read"]), mode=mode) as client:
                tools = await client.list_tools()
                result = await client.call_tool("echo", {"message": "hello"})
    names = {tool.name for tool in tools.tools}
    assert "echo" in names
    assert result.content[0].text == "hello"  # type: ignore[union-attr]
    forwarded = stack.tap.calls("tools/call")
    assert [call["params"]["name"] for call in forwarded] == ["echo"]
    assert all("authorization" not in headers for _, headers, _ in stack.tap.requests)
