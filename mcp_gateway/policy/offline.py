"""The deciders `policy test` and `policy replay` use: the live ones, built from files instead of a running gateway.

Same classes, same `DecisionInput`: a case or a recorded call is decided by exactly the code that decides
live. The pinned input schemas join through `arguments_check` (see `cedar.ArgumentsCheck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcp_gateway.config import ServerEntry
from mcp_gateway.policy.cedar import ArgumentsCheck, CedarDecider, CedarPolicies
from mcp_gateway.policy.decider import Decider, DecisionInput, ScopeDecider
from mcp_gateway.policy.decision import Decision, ServerPolicy
from mcp_gateway.policy.scopes import ScopeHierarchy

__all__ = ["PolicyBundle"]

_NO_SERVER = Decision("deny", (), "no_server")


@dataclass
class PolicyBundle:
    """Allowlist scope rules per server, optionally Cedar policies and an arguments check over them."""

    servers: Mapping[str, ServerEntry]
    hierarchy: ScopeHierarchy = field(default_factory=ScopeHierarchy)
    cedar: CedarPolicies | None = None
    arguments_check: ArgumentsCheck | None = None
    _deciders: dict[str, Decider] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_files(
        cls,
        servers: Mapping[str, ServerEntry],
        hierarchy: ScopeHierarchy,
        cedar: Path | None,
        arguments_check: ArgumentsCheck | None = None,
    ) -> PolicyBundle:
        return cls(servers, hierarchy, CedarPolicies.load(cedar) if cedar else None, arguments_check)

    def decider(self, server: str) -> Decider | None:
        found = self._deciders.get(server)
        if found is None:
            entry = self.servers.get(server)
            if entry is None:
                return None
            scopes = ScopeDecider(ServerPolicy(entry, self.hierarchy))
            found = CedarDecider(scopes, self.cedar, arguments_check=self.arguments_check)
            self._deciders[server] = found
        return found

    def decide(self, request: DecisionInput) -> Decision:
        """The decision for `request`; a server the allowlist does not name is refused (`no_server`)."""
        decider = self.decider(request.server)
        return _NO_SERVER if decider is None else decider.decide(request)

    def reads_arguments(self, request: DecisionInput) -> bool:
        """Whether `request`'s decision can depend on its arguments: the scope rules allow it and then the
        arguments check or a Cedar policy that reads `context.arguments` judges it."""
        decider = self.decider(request.server)
        if not isinstance(decider, CedarDecider) or decider.scopes.decide(request).kind != "allow":
            return False
        if self.arguments_check is not None and request.method == "tools/call":
            return True
        return self.cedar is not None and any(s.reads_arguments for s in self.cedar.targeting(request))
