"""Every audited call leaves exactly one closing record: intent + one outcome, or one refusal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.record import AuditRecord
from tests._mcp import HANDSHAKE, modern_headers, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import WatchedAuditSink, call_body, modern_call_body

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    audit = WatchedAuditSink()
    async with gateway_stack(tmp_path_factory.mktemp("recording"), audit=audit) as stack:
        stack.extra["audit"] = audit
        yield stack


def _event_ids(audit: WatchedAuditSink, reason: str) -> set[str]:
    return {r.event_id for r in audit.records if r.request_context == reason}


def _by_reason(audit: WatchedAuditSink, reason: str) -> list[AuditRecord]:
    # An outcome names its call by event id only; the intent (or the lone event) carries the reason.
    ids = _event_ids(audit, reason)
    return [r for r in audit.records if r.event_id in ids]


async def _modern(stack: Stack, http: httpx2.AsyncClient, tool: str, reason: str, scopes: list[str]) -> int:
    body = modern_call_body(tool, {})
    body["params"]["_meta"]["request_context"] = reason
    response = await http.post(
        stack.mcp_url(), headers=modern_headers(stack.token(scopes), "tools/call", tool), json=body
    )
    return response.status_code


@pytest.mark.parametrize(
    ("tool", "scopes", "status", "expected"),
    [
        ("test_simple_text", ["tools:call"], 200, [("intent", None, None), ("outcome", "ok", 200)]),
        ("test_error_handling", ["tools:call"], 200, [("intent", None, None), ("outcome", "tool_error", 200)]),
        ("delete_everything", ["tools:call"], 403, [("event", "denied", 403)]),
    ],
)
async def test_each_call_is_closed_by_exactly_one_record(
    stack: Stack, tool: str, scopes: list[str], status: int, expected: list[tuple[str, Any, Any]]
) -> None:
    audit: WatchedAuditSink = stack.extra["audit"]
    reason = f"closing records for {tool}"
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            assert await _modern(stack, http, tool, reason, scopes) == status
            await audit.wait_for(lambda r: r.event_id in _event_ids(audit, reason) and r.phase != "intent")
    records = _by_reason(audit, reason)
    assert [(r.phase, r.outcome, r.http_status) for r in records] == expected
    assert len({r.event_id for r in records}) == 1


async def test_handshake_call_and_its_session_404_are_each_closed_once(stack: Stack) -> None:
    audit: WatchedAuditSink = stack.extra["audit"]
    token = stack.token(["tools:read"])
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            session = await open_session(http, stack.mcp_url(), token)
            headers = post_headers(token, version=HANDSHAKE, session=session)
            for reason in ("before the end", "after the end"):
                body = call_body("echo", {"message": reason}, _meta={"request_context": reason})
                await http.post(stack.mcp_url(), headers=headers, json=body)
                if reason == "before the end":
                    await http.delete(stack.mcp_url(), headers=headers)
                await audit.wait_for(
                    lambda r, reason=reason: r.event_id in _event_ids(audit, reason) and r.phase == "outcome"
                )
    closing = defaultdict(list)
    for reason in ("before the end", "after the end"):
        for record in _by_reason(audit, reason):
            closing[reason].append((record.phase, record.outcome, record.http_status))
    assert closing == {
        "before the end": [("intent", None, None), ("outcome", "ok", 200)],
        "after the end": [("intent", None, None), ("outcome", "session_not_found", 404)],
    }


async def test_no_event_has_more_than_one_closing_record(stack: Stack) -> None:
    # Runs last in this module: a sweep over every record the calls above produced.
    audit: WatchedAuditSink = stack.extra["audit"]
    phases: dict[str, list[str]] = defaultdict(list)
    for record in audit.records:
        phases[record.event_id].append(record.phase)
    assert phases
    assert all(p in (["intent", "outcome"], ["event"]) for p in phases.values()), phases
