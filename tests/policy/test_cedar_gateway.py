"""Cedar argument-level rules through a real gateway, called with the `mcp` SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.audit.sink import MemoryAuditSink
from tests._stack import Stack
from tests.policy._cedar_stack import cedar_stack

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    audit = MemoryAuditSink()
    async with cedar_stack(tmp_path, audit=audit) as stack:
        stack.extra["audit"] = audit
        yield stack


async def _answer(stack: Stack, tool: str, arguments: dict[str, Any], client: str) -> str | MCPError:
    with anyio.fail_after(20):
        async with stack.client(stack.token(["tools:call"], client=client)) as session:
            try:
                result = await session.call_tool(tool, arguments)
            except MCPError as exc:
                return exc
    assert not result.is_error
    return str(result.content[0].text)  # type: ignore[union-attr]


async def _call(stack: Stack, tool: str, arguments: dict[str, Any], *, client: str = "agent-a") -> str:
    """The tool's text answer, which the upstream gave."""
    answer = await _answer(stack, tool, arguments, client)
    assert isinstance(answer, str), answer
    return answer


async def _refused(stack: Stack, tool: str, arguments: dict[str, Any], *, client: str = "agent-a") -> str:
    """The gateway's refusal message; the upstream saw nothing."""
    before = len(stack.tap.calls("tools/call"))
    answer = await _answer(stack, tool, arguments, client)
    assert isinstance(answer, MCPError), answer
    assert len(stack.tap.calls("tools/call")) == before
    assert answer.error.code == -32602
    return answer.error.message


async def test_a_transfer_within_the_limit_goes_through_and_one_above_it_is_refused_naming_the_policy(
    stack: Stack,
) -> None:
    assert await _call(stack, "transfer", {"amount": 100}) == "moved 100.0 to savings"
    message = await _refused(stack, "transfer", {"amount": 101})
    assert "transfer-limit" in message
    audit: MemoryAuditSink = stack.extra["audit"]
    refusal = [r for r in audit.records if r.tool == "transfer" and r.decision == "deny"]
    assert [r.policy_rule for r in refusal] == ["cedar:transfer-limit"]


async def test_an_amount_that_is_not_an_integer_is_refused_rather_than_skipped_by_the_limit(stack: Stack) -> None:
    # Cedar skips a policy that errors (150.5 > 100 mixes decimal and Long): the gateway refuses instead.
    message = await _refused(stack, "transfer", {"amount": 150.5})
    assert "transfer-limit" in message and "cannot be evaluated" in message


async def test_files_under_the_public_prefix_are_read_and_others_are_refused(stack: Stack) -> None:
    assert await _call(stack, "read_file", {"path": "/public/readme.txt"}) == "contents of /public/readme.txt"
    assert "public-files-only" in await _refused(stack, "read_file", {"path": "/etc/passwd"})
    assert "public-files-only" in await _refused(stack, "read_file", {"path": "/public/../etc/passwd"})


async def test_a_user_reads_their_own_repository_and_not_another_users(stack: Stack) -> None:
    # The dev issuer's agent-a acts for sub "user-of-agent-a": principal.user.
    assert await _call(stack, "read_repo", {"owner": "user-of-agent-a", "repo": "notes"}) == "user-of-agent-a/notes"
    assert "own-repos-only" in await _refused(stack, "read_repo", {"owner": "user-of-agent-b", "repo": "notes"})
    assert await _call(stack, "read_repo", {"owner": "user-of-agent-b", "repo": "x"}, client="agent-b") == (
        "user-of-agent-b/x"
    )


async def test_a_call_inside_its_time_window_goes_through_and_one_outside_is_refused(stack: Stack) -> None:
    assert await _call(stack, "deploy", {}) == "deployed"
    assert "report-window" in await _refused(stack, "report", {})


async def test_a_call_no_policy_targets_is_decided_by_the_scopes_alone(stack: Stack) -> None:
    assert await _call(stack, "echo", {"message": "untouched"}) == "untouched"
    audit: MemoryAuditSink = stack.extra["audit"]
    echo = [r for r in audit.records if r.tool == "echo" and r.phase == "intent"]
    assert [r.policy_rule for r in echo] == ["default_scopes"]


async def test_scopes_stay_the_first_gate_and_a_cedar_permit_does_not_open_a_tool(stack: Stack) -> None:
    audit: MemoryAuditSink = stack.extra["audit"]
    with anyio.fail_after(20), pytest.raises(BaseException):  # noqa: B017  # the SDK gives up on a 403
        async with stack.client(stack.token(["tools:read"])) as session:
            await session.call_tool("deploy", {})
    assert stack.tap.calls("tools/call") == []
    refusal = [r for r in audit.records if r.tool == "deploy"]
    assert [(r.decision, r.policy_rule) for r in refusal] == [("step_up", "default_scopes")]


async def test_a_shadow_policy_that_disagrees_is_recorded_and_not_enforced(tmp_path: Path) -> None:
    audit = MemoryAuditSink()
    candidate = """@id("no-echo")
forbid (principal, action == Action::"tools/call", resource == Tool::"everything/echo");
"""
    async with cedar_stack(tmp_path, shadow=candidate, audit=audit) as stack:
        assert await _call(stack, "echo", {"message": "still allowed"}) == "still allowed"
        assert await _call(stack, "deploy", {}) == "deployed"
    intents = {r.tool: r for r in audit.records if r.phase == "intent"}
    assert intents["echo"].shadow_decision == "deny:cedar:no-echo"
    assert intents["echo"].decision == "allow"
    assert intents["deploy"].shadow_decision is None  # the candidate agrees
