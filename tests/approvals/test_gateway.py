"""Calls that need a person's approval, through a real gateway and the `mcp` SDK's client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import MCPError

from mcp_gateway.audit.record import arguments_digest
from mcp_gateway.audit.stores import audit_location, open_audit_reader
from tests._stack import Stack
from tests.approvals._support import (
    approval_stack,
    approver_token,
    decide,
    pending,
    wait_none_pending,
    wait_pending,
)
from tests.e2e._audit_support import call_tool

pytestmark = pytest.mark.anyio


def _echo_calls(stack: Stack) -> list[dict[str, Any]]:
    return [c for c in stack.tap.calls("tools/call") if c["params"]["name"] == "echo"]


async def _records(stack: Stack) -> list[dict[str, Any]]:
    await stack.app.audit.flush()
    config = stack.config
    reader = open_audit_reader(audit_location(url=None, database=config.audit.database, base_dir=config.base_dir))
    return list(reader.query())


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_an_approved_call_is_forwarded_exactly_once_with_the_approved_arguments(
    tmp_path: Path, mode: str
) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient() as http:
        approver = approver_token(stack)
        results: list[Any] = []
        async with stack.client(stack.token(), mode=mode) as client, anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await client.call_tool("echo", {"message": "ship it"}))

            tg.start_soon(call)
            (item,) = await wait_pending(http, stack, approver)
            assert _echo_calls(stack) == []  # held: nothing reached the upstream
            assert item["tool"] == "echo" and item["agent_id"] == "agent-a"
            assert item["arguments_sha256"] == arguments_digest({"message": "ship it"})
            answer = await decide(http, stack, approver, item["id"], "approve", "reviewed")
            assert answer.status_code == 200, answer.text
            assert answer.json()["approver"] == "user-of-approver"
        assert results[0].content[0].text == "ship it"
        (forwarded,) = _echo_calls(stack)
        assert forwarded["params"]["arguments"] == {"message": "ship it"}
        again = await decide(http, stack, approver, item["id"], "approve")
        assert again.status_code == 404  # once: the approval is spent
        assert len(_echo_calls(stack)) == 1


async def test_a_denied_call_is_never_forwarded_and_the_client_is_told_why(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient() as http:
        approver = approver_token(stack)
        async with stack.client(stack.token()) as client, anyio.create_task_group() as tg:

            async def deny() -> None:
                (item,) = await wait_pending(http, stack, approver)
                assert (await decide(http, stack, approver, item["id"], "deny", "not today")).status_code == 200

            tg.start_soon(deny)
            with pytest.raises(MCPError) as caught:
                await client.call_tool("echo", {"message": "drop tables"})
        assert "denied by an approver: not today" in str(caught.value)
        assert _echo_calls(stack) == []


async def test_a_call_nobody_approves_in_time_expires_and_is_never_forwarded(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack:
        async with stack.client(stack.token()) as client:
            with anyio.fail_after(10), pytest.raises(MCPError) as caught:
                await client.call_tool("whoami", {})  # timeout_seconds = 0.5
        assert "was not approved within 0.5 seconds" in str(caught.value)
        assert stack.tap.calls("tools/call") == []
        records = await _records(stack)
        decided = [r for r in records if r["event_type"] == "approval_decided"]
        assert [json.loads(r["approval"])["decision"] for r in decided] == ["expired"]


async def test_a_call_whose_client_goes_away_is_withdrawn_audited_and_never_forwarded(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=30) as http:
        approver = approver_token(stack)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def leave() -> None:
                    await wait_pending(http, stack, approver)
                    scope.cancel()  # the client hangs up while the call is held

                tg.start_soon(leave)
                async with httpx2.AsyncClient(timeout=30) as caller:
                    await call_tool(caller, stack.mcp_url(), stack.token(), "echo", {"message": "later"})
        await wait_none_pending(http, stack, approver)
        assert _echo_calls(stack) == []
        records = await _records(stack)
        decided = [r for r in records if r["event_type"] == "approval_decided"]
        assert json.loads(decided[0]["approval"])["decision"] == "withdrawn"
        assert decided[0]["outcome"] == "aborted"


async def test_an_approval_is_bound_to_one_call_its_arguments_and_another_principal(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=30) as http:
        approver = approver_token(stack)
        asker_as_approver = approver_token(stack, client="agent-a")  # the caller's own sub, with the scope
        outcomes: dict[str, int] = {}

        async def call(message: str) -> None:
            async with httpx2.AsyncClient(timeout=30) as caller:
                response = await call_tool(caller, stack.mcp_url(), stack.token(), "echo", {"message": message})
                outcomes[message] = response.status_code
                outcomes[message + ":error"] = "error" in response.json()

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first")
            (first,) = await wait_pending(http, stack, approver)
            # No self-approval: the principal who asked cannot decide, whatever scopes its token holds.
            refused = await decide(http, stack, asker_as_approver, first["id"], "approve")
            assert refused.status_code == 403 and "principal who made it" in refused.json()["message"]
            assert (await decide(http, stack, approver, first["id"], "approve")).status_code == 200
            tg.start_soon(call, "second")
            (second,) = await wait_pending(http, stack, approver, exclude=[first["id"]])
            assert second["id"] != first["id"]
            # The spent approval opens no other call, and a decision naming other arguments is refused.
            assert (await decide(http, stack, approver, first["id"], "approve")).status_code == 404
            wrong = await decide(
                http, stack, approver, second["id"], "approve", arguments_sha256=first["arguments_sha256"]
            )
            assert wrong.status_code == 409
            assert [i["id"] for i in await pending(http, stack, approver)] == [second["id"]]
            assert (await decide(http, stack, approver, second["id"], "deny", "one is enough")).status_code == 200
        assert [c["params"]["arguments"] for c in _echo_calls(stack)] == [{"message": "first"}]
        assert outcomes == {"first": 200, "first:error": False, "second": 200, "second:error": True}


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_client_with_a_progress_token_hears_that_its_call_awaits_approval(tmp_path: Path, mode: str) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient() as http:
        stack.app.endpoint.approvals.heartbeat_seconds = 0.05
        approver = approver_token(stack)
        heard: list[tuple[float, str | None]] = []
        two = anyio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            heard.append((value, message))
            if len(heard) >= 2:
                two.set()

        results: list[Any] = []
        async with stack.client(stack.token(), mode=mode) as client, anyio.create_task_group() as tg:

            async def call() -> None:
                results.append(await client.call_tool("echo", {"message": "hi"}, progress_callback=progress))

            tg.start_soon(call)
            with anyio.fail_after(10):
                await two.wait()
            (item,) = await pending(http, stack, approver)
            assert _echo_calls(stack) == []
            assert (await decide(http, stack, approver, item["id"], "approve")).status_code == 200
        assert results[0].content[0].text == "hi"
        assert heard[0][0] == 0 and heard[1][0] == 1  # progress increases with each notification
        assert all(f"Awaiting approval {item['id']}" in (m or "") for _, m in heard)
        assert len(_echo_calls(stack)) == 1


async def test_the_audit_log_tells_who_approved_and_who_denied_which_call(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=30) as http:
        approver = approver_token(stack)
        async with anyio.create_task_group() as tg:
            for message in ("approve me", "deny me"):
                tg.start_soon(call_tool, http, stack.mcp_url(), stack.token(), "echo", {"message": message})
            items = await wait_pending(http, stack, approver, 2)
            for item in items:
                verdict = "approve" if "approve" in item["arguments"] else "deny"
                assert (
                    await decide(http, stack, approver, item["id"], verdict, f"{verdict}d by policy")
                ).status_code == 200
        records = await _records(stack)
    by_call: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_call.setdefault(record["event_id"], []).append(record)
    assert len(by_call) == 2
    for rows in by_call.values():
        kinds = {r["event_type"]: r for r in rows}
        requested, decided = kinds["approval_requested"], kinds["approval_decided"]
        approval = json.loads(decided["approval"])
        assert approval["approver"] == "user-of-approver"
        if approval["decision"] == "approve":
            # The call itself (intent merged with outcome) and its two approval events share one event_id.
            assert len(rows) == 3
            call = kinds[None]
            assert call["outcome"] == "ok" and call["decision"] == "allow"
            assert json.loads(call["approval"]) == approval
            assert approval["reason"] == "approved by policy"
        else:
            assert len(rows) == 2  # never forwarded: no intent, the decision closes the call
            assert decided["outcome"] == "denied" and decided["decision"] == "deny"
            assert decided["policy_rule"] == "approvals.echo"
            assert approval == {
                "id": approval["id"],
                "approver": "user-of-approver",
                "decision": "deny",
                "reason": "denyd by policy",
            }
        assert json.loads(requested["approval"]) == {
            "id": approval["id"],
            "approver": None,
            "decision": "pending",
            "reason": None,
        }
        assert requested["agent_id"] == "agent-a" and requested["arguments_sha256"] and requested["decision"] == "allow"
