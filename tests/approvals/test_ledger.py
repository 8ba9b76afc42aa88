"""Held calls in memory: each decided once, by the right person, before it expires."""

from __future__ import annotations

import pytest

from mcp_gateway.approvals.ledger import MAX_PENDING_PER_PRINCIPAL, ApprovalLedger, ApprovalRefused
from mcp_gateway.approvals.rules import binding_of
from mcp_gateway.auth.principal import Principal
from mcp_gateway.config import ApprovalRule
from mcp_gateway.errors import RateLimited

pytestmark = pytest.mark.anyio

RULE = ApprovalRule(approver_scope="approvals:decide", timeout_seconds=60)


def _principal(subject: str, agent: str, *scopes: str) -> Principal:
    return Principal("https://issuer", subject, agent, subject, (), frozenset(scopes), 2e9, "jti", ("aud",))


ASKER = _principal("alice", "agent-1", "tools:call")
BOB = _principal("bob", "console", "approvals:decide")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open(ledger: ApprovalLedger, digest: str = "d1", asker: Principal = ASKER) -> object:
    return ledger.open(
        binding_of(asker, "srv", "delete", digest), asker, RULE, event_id="e", request_context=None, arguments="{}"
    )


async def test_a_decision_settles_the_call_once_and_the_id_is_then_gone() -> None:
    ledger = ApprovalLedger(Clock())
    pending = ledger.open(
        binding_of(ASKER, "srv", "delete", "d1"), ASKER, RULE, event_id="e", request_context="why", arguments="{}"
    )
    decided = ledger.decide(pending.id, BOB, "approve", "fine")
    assert pending.decided.result() is decided
    assert (decided.resolution, decided.approver, decided.reason) == ("approve", "bob", "fine")
    assert decided.binding == pending.binding
    with pytest.raises(ApprovalRefused) as again:
        ledger.decide(pending.id, BOB, "deny", None)
    assert again.value.status == 404
    assert ledger.withdraw(pending) is decided  # the first decision stands
    assert len(ledger) == 0


async def test_the_asker_cannot_decide_and_a_decision_naming_other_arguments_is_refused() -> None:
    ledger = ApprovalLedger(Clock())
    pending = ledger.open(
        binding_of(ASKER, "srv", "delete", "d1"), ASKER, RULE, event_id="e", request_context=None, arguments="{}"
    )
    self_approver = _principal("alice", "agent-1", "approvals:decide")
    for approver, digest, status in ((self_approver, None, 403), (BOB, "d2", 409)):
        with pytest.raises(ApprovalRefused) as refused:
            ledger.decide(pending.id, approver, "approve", None, digest)
        assert refused.value.status == status
    assert not pending.decided.done() and ledger.get(pending.id) is pending


async def test_an_expired_call_cannot_be_approved_and_is_settled_as_expired() -> None:
    clock = Clock()
    ledger = ApprovalLedger(clock)
    pending = ledger.open(
        binding_of(ASKER, "srv", "delete", "d1"), ASKER, RULE, event_id="e", request_context=None, arguments="{}"
    )
    clock.now += 60
    with pytest.raises(ApprovalRefused) as refused:
        ledger.decide(pending.id, BOB, "approve", None)
    assert refused.value.status == 410
    assert pending.decided.result().resolution == "expired"


async def test_shutdown_refuses_held_and_new_calls_and_each_principal_holds_few() -> None:
    ledger = ApprovalLedger(Clock())
    held = [
        ledger.open(
            binding_of(ASKER, "srv", "delete", str(n)), ASKER, RULE, event_id="e", request_context=None, arguments="{}"
        )
        for n in range(MAX_PENDING_PER_PRINCIPAL)
    ]
    with pytest.raises(RateLimited):
        _open(ledger, "one more")
    assert ledger.close() == MAX_PENDING_PER_PRINCIPAL
    assert {p.decided.result().resolution for p in held} == {"shutdown"}
    with pytest.raises(ApprovalRefused) as refused:
        _open(ledger, "after")
    assert refused.value.status == 503


def test_approval_ids_never_start_like_a_command_line_option() -> None:
    from mcp_gateway.approvals.ledger import new_approval_id

    ids = [new_approval_id() for _ in range(2000)]  # about 60 would start with "-" or "_" unfiltered
    assert all(i[0] not in "-_" and len(i) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
