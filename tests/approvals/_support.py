"""A gateway stack whose `echo` and `whoami` calls wait for a person's approval, and the approver's side.

async with approval_stack(tmp_path) as stack:
    approver = approver_token(stack)                       # client "approver": another sub, approvals:decide
    items = await wait_pending(http, stack, approver)       # GET /approvals until a call is held
    answer = await decide(http, stack, approver, items[0]["id"], "approve", "looks right")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2

from tests._stack import ALL_SCOPES, DEFAULT_ALLOWLIST, Stack, gateway_stack

APPROVER_SCOPE = "approvals:decide"
ALLOWLIST = (
    DEFAULT_ALLOWLIST
    + f"""
[servers.everything.approvals]
echo = {{ approver_scope = "{APPROVER_SCOPE}", timeout_seconds = 30 }}
whoami = {{ approver_scope = "{APPROVER_SCOPE}", timeout_seconds = 0.5 }}
"""
)
CLIENTS = {
    "agent-a": (*ALL_SCOPES, APPROVER_SCOPE, "audit:read"),  # may approve others' calls, never its own
    "approver": (APPROVER_SCOPE, "audit:read"),
    "auditor": ("audit:read",),
}


@asynccontextmanager
async def approval_stack(directory: Path, **options: Any) -> AsyncIterator[Stack]:
    async with gateway_stack(directory, allowlist=ALLOWLIST, clients=CLIENTS, **options) as stack:
        yield stack


def approvals_url(stack: Stack) -> str:
    return f"{stack.base_url}/approvals"


def approver_token(stack: Stack, client: str = "approver", scopes: Sequence[str] = (APPROVER_SCOPE,)) -> str:
    """A token for the approvals API (audience {public_url}/approvals)."""
    return stack.token(scopes, client=client, resource=approvals_url(stack))


async def pending(http: httpx2.AsyncClient, stack: Stack, token: str) -> list[dict[str, Any]]:
    response = await http.get(approvals_url(stack), headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["approvals"]
    return items


async def wait_pending(
    http: httpx2.AsyncClient, stack: Stack, token: str, count: int = 1, *, exclude: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The held calls once `count` of them (not in `exclude`) are waiting."""
    with anyio.fail_after(10):
        while True:
            items = [i for i in await pending(http, stack, token) if i["id"] not in exclude]
            if len(items) >= count:
                return items
            await anyio.sleep(0.02)


async def wait_none_pending(http: httpx2.AsyncClient, stack: Stack, token: str) -> None:
    with anyio.fail_after(10):
        while await pending(http, stack, token):
            await anyio.sleep(0.02)


async def decide(
    http: httpx2.AsyncClient,
    stack: Stack,
    token: str,
    approval_id: str,
    decision: str,
    reason: str | None = None,
    **extra: Any,
) -> httpx2.Response:
    return await http.post(
        f"{approvals_url(stack)}/{approval_id}",
        json={"decision": decision, "reason": reason, **extra},
        headers={"authorization": f"Bearer {token}"},
    )
