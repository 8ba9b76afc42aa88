"""Held calls awaiting a person's decision, in this process's memory: each decided exactly once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_gateway.approvals.rules import (
    ApproverRefusal,
    Binding,
    Resolution,
    Verdict,
    approver_name,
    approver_refusal,
)
from mcp_gateway.auth.principal import Principal
from mcp_gateway.config import ApprovalRule
from mcp_gateway.errors import RateLimited

MAX_PENDING: Final = 1000  # held calls per process
MAX_PENDING_PER_PRINCIPAL: Final = 20


@dataclass(frozen=True, slots=True)
class Decided:
    """How one held call's wait ended, who ended it, why, and when (epoch seconds)."""

    resolution: Resolution
    approver: str | None
    reason: str | None
    at: float
    binding: Binding  # what the decision was about: the held call checks it is its own


@dataclass(slots=True, eq=False)
class PendingApproval:
    """One held call: what it is bound to, who asked, what it shows the approver, and its one decision."""

    id: str
    binding: Binding
    asker: Principal
    rule: ApprovalRule
    created_at: float
    expires_at: float
    event_id: str
    request_context: str | None
    arguments: str | None  # redacted JSON text of the arguments, for the approver to read
    decided: asyncio.Future[Decided] = field(repr=False)

    def view(self) -> dict[str, Any]:
        """The JSON an approver sees."""
        return {
            "id": self.id,
            "server": self.binding.server,
            "tool": self.binding.tool,
            "agent_id": self.asker.agent_id,
            "delegating_user": self.asker.delegating_user,
            "arguments_sha256": self.binding.arguments_sha256,
            "arguments": self.arguments,
            "request_context": self.request_context,
            "approver_scope": self.rule.approver_scope,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "event_id": self.event_id,
        }


class ApprovalRefused(Exception):
    """A decision that cannot be taken: no such pending call, a wrong token, a binding that does not match."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApprovalLedger:
    """The held calls of this process. Every path that ends a wait (a verdict, expiry, the client leaving,
    shutdown) goes through `_settle`, which removes the entry and resolves its future in one step with no
    await in between, so a call is decided once and an approval can never be used twice."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._pending: dict[str, PendingApproval] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def open(
        self,
        binding: Binding,
        asker: Principal,
        rule: ApprovalRule,
        *,
        event_id: str,
        request_context: str | None,
        arguments: str | None,
    ) -> PendingApproval:
        if self._closed:
            raise ApprovalRefused(503, "the gateway is shutting down")
        if len(self._pending) >= MAX_PENDING or self._count(binding.principal) >= MAX_PENDING_PER_PRINCIPAL:
            # SECURITY.md: bounded memory; a principal cannot hold the approvers' queue hostage.
            raise RateLimited("Too Many Requests: too many calls are awaiting approval", retry_after=30)
        now = self.clock()
        pending = PendingApproval(
            id=new_approval_id(),
            binding=binding,
            asker=asker,
            rule=rule,
            created_at=now,
            expires_at=now + rule.timeout_seconds,
            event_id=event_id,
            request_context=request_context,
            arguments=arguments,
            decided=asyncio.get_running_loop().create_future(),
        )
        self._pending[pending.id] = pending
        return pending

    def _count(self, principal: str) -> int:
        return sum(1 for p in self._pending.values() if p.binding.principal == principal)

    def pending(self) -> list[PendingApproval]:
        """Held calls, oldest first (expired ones are settled as such on the way)."""
        now = self.clock()
        for item in [p for p in self._pending.values() if now >= p.expires_at]:
            self._settle(item, "expired", None, None)
        return sorted(self._pending.values(), key=lambda p: p.created_at)

    def get(self, approval_id: str) -> PendingApproval | None:
        return self._pending.get(approval_id)

    def decide(
        self,
        approval_id: str,
        approver: Principal,
        verdict: Verdict,
        reason: str | None,
        arguments_sha256: str | None = None,
    ) -> Decided:
        """Approve or deny the held call `approval_id`, once; ApprovalRefused says why it cannot be."""
        pending = self._pending.get(approval_id)
        if pending is None:
            raise ApprovalRefused(404, "no call is awaiting approval under this id (decided, expired or withdrawn)")
        refusal: ApproverRefusal | None = approver_refusal(
            approver, pending.asker, pending.rule.approver_scope, expires_at=pending.expires_at, now=self.clock()
        )
        if refusal is not None:
            if refusal.status == 410:
                self._settle(pending, "expired", None, None)
            raise ApprovalRefused(refusal.status, refusal.message)
        if arguments_sha256 is not None and arguments_sha256 != pending.binding.arguments_sha256:
            # The approver said which arguments they approve: anything else is not what they saw.
            raise ApprovalRefused(409, "the held call's arguments are not the ones this decision names")
        decided = self._settle(pending, verdict, approver_name(approver), reason)
        assert decided is not None
        return decided

    def expire(self, pending: PendingApproval) -> Decided:
        return self._settle(pending, "expired", None, None) or pending.decided.result()

    def withdraw(self, pending: PendingApproval) -> Decided:
        return self._settle(pending, "withdrawn", None, None) or pending.decided.result()

    def close(self) -> int:
        """Refuse every held call (shutdown) and every new one; returns how many were held."""
        self._closed = True
        held = list(self._pending.values())
        for pending in held:
            self._settle(pending, "shutdown", None, None)
        return len(held)

    def _settle(
        self, pending: PendingApproval, resolution: Resolution, approver: str | None, reason: str | None
    ) -> Decided | None:
        if self._pending.get(pending.id) is not pending or pending.decided.done():
            return None  # decided already: the first decision stands
        del self._pending[pending.id]
        decided = Decided(resolution, approver, reason, self.clock(), pending.binding)
        pending.decided.set_result(decided)
        return decided


def new_approval_id() -> str:
    """96 random bits as base64url that never starts with "-" or "_": an id a person types after
    `mcp-gateway approvals approve` must not read as an option."""
    while True:
        candidate = secrets.token_urlsafe(12)
        if candidate[0] not in "-_":
            return candidate
