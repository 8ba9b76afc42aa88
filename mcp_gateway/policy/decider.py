"""The decision seam: one call, one input value, one verdict with the rule that gave it.

The same `DecisionInput` is built for a live call, for `policy test` cases and for a what-if replay of
audit records, so an argument-aware engine (Cedar) and the replay decide from exactly what the live
path saw. Deciders are pure: no I/O, no clock reads (`now` is in the input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_gateway.policy.decision import Decision, ServerPolicy


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """Everything a policy may look at for one client request."""

    server: str
    method: str
    params: Mapping[str, Any] | None  # the request's params as received (shape unchecked)
    scopes: frozenset[str]  # the token's scopes as issued; hierarchies are the decider's business
    agent_id: str | None = None
    delegating_user: str | None = None
    issuer: str | None = None
    name: str | None = None  # tool or prompt name, or resource URI
    arguments: Any = None  # tools/call arguments
    request_context: str | None = None  # params._meta.request_context
    era: str | None = None  # the protocol revision the request speaks
    now: float = 0.0  # epoch seconds
    client_address: str | None = None


class Decider(Protocol):
    """Judges one request: allow, step up (403 naming the scopes) or deny, with the deciding rule."""

    def decide(self, request: DecisionInput) -> Decision: ...


class ScopeDecider:
    """The allowlist's scope rules (`tool_scopes`, `resource_scopes`, `prompt_scopes`, `default_scopes`)."""

    __slots__ = ("policy",)

    def __init__(self, policy: ServerPolicy) -> None:
        self.policy = policy

    def decide(self, request: DecisionInput) -> Decision:
        return self.policy.decide_request(request.scopes, request.method, request.params)
