"""Timeouts toward upstreams: read_timeout_seconds is the longest silence, max_call_seconds caps a whole call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.config import ServerEntry
from tests._mcp import modern_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import (
    Receive,
    Scope,
    ScriptedUpstream,
    Send,
    json_error,
    modern_call_body,
    parse_events,
    progress_for,
    result_for,
    send_chunk,
    sse_message,
    start_sse,
)

pytestmark = pytest.mark.anyio

_PACE = 0.25  # seconds between two progress notifications: within read_timeout_seconds (0.6)


async def _scripted(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    tool = body["params"]["name"]
    if tool == "hang":
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    await start_sse(send)
    steps = 5 if tool == "chatty_then_done" else 10_000  # 5 x 0.25 s outlasts read_timeout, not max_call
    for step in range(steps):
        await send_chunk(send, sse_message(progress_for(body, step)))
        await anyio.sleep(_PACE)  # the upstream's own pace, not a wait for the test
    await send_chunk(send, sse_message(result_for(body)), more=False)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    audit = MemoryAuditSink()
    async with gateway_stack(
        tmp_path_factory.mktemp("timeouts"),
        upstream_app=ScriptedUpstream(_scripted),
        server_extra="read_timeout_seconds = 0.6\nmax_call_seconds = 2.5",
        audit=audit,
    ) as stack:
        stack.extra["audit"] = audit
        yield stack


async def _call(stack: Stack, tool: str) -> tuple[httpx2.Response, str]:
    async with httpx2.AsyncClient(timeout=20) as http:
        with anyio.fail_after(20):
            async with http.stream(
                "POST",
                stack.mcp_url(),
                headers=modern_headers(stack.token(), "tools/call", tool),
                json=modern_call_body(tool, {}),
            ) as response:
                return response, (await response.aread()).decode()


def _outcome(stack: Stack, tool: str) -> tuple[str | None, int | None]:
    audit: MemoryAuditSink = stack.extra["audit"]
    (record,) = [r for r in audit.records if r.tool == tool and r.phase == "outcome"]
    return record.outcome, record.http_status


def test_read_timeout_defaults_to_sixty_seconds_and_max_call_to_none() -> None:
    entry = ServerEntry(url="http://127.0.0.1:1/mcp")
    assert (entry.read_timeout_seconds, entry.max_call_seconds) == (60.0, None)


async def test_progress_notifications_count_as_bytes_for_the_read_timeout(stack: Stack) -> None:
    started = time.monotonic()
    _, text = await _call(stack, "chatty_then_done")
    assert time.monotonic() - started > 0.6 * 2  # the call outlasted read_timeout twice over
    messages = [event.message() for event in parse_events(text) if event.data]
    assert [m.get("method") for m in messages] == ["notifications/progress"] * 5 + [None]
    assert messages[-1]["result"]["content"][0]["text"] == "done"
    assert _outcome(stack, "chatty_then_done") == ("ok", 200)


async def test_a_call_outlasting_max_call_seconds_ends_with_a_timeout_error_for_its_id(stack: Stack) -> None:
    started = time.monotonic()
    _, text = await _call(stack, "chatty_forever")
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 6
    messages = [event.message() for event in parse_events(text) if event.data]
    assert {m.get("method") for m in messages[:-1]} == {"notifications/progress"}
    assert messages[-1] == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": "Gateway Timeout: the upstream stopped sending"},
    }
    assert _outcome(stack, "chatty_forever") == ("timeout", 200)


async def test_max_call_seconds_bounds_the_wait_for_the_response_head_too(tmp_path: Path) -> None:
    audit = MemoryAuditSink()
    upstream = ScriptedUpstream(_scripted)
    async with gateway_stack(
        tmp_path, upstream_app=upstream, server_extra="read_timeout_seconds = 30\nmax_call_seconds = 0.5", audit=audit
    ) as stack:
        stack.extra["audit"] = audit
        started = time.monotonic()
        response, text = await _call(stack, "hang")
        assert time.monotonic() - started < 10  # read_timeout (30 s) would have let it hang
        assert response.status_code == 504
        assert json_error(httpx2.Response(504, content=text, headers=response.headers)) == {
            "code": -32603,
            "message": "Gateway Timeout: the upstream did not answer in time",
        }
        assert _outcome(stack, "hang") == ("timeout", 504)
