"""Authorization policy: scope hierarchies, per-operation decisions, list filtering and rate limits."""

from __future__ import annotations

from mcp_gateway.policy.decision import Decision, DecisionKind, ListKind, ServerPolicy
from mcp_gateway.policy.listing import filter_list_result
from mcp_gateway.policy.ratelimit import MemoryRateLimiter, RateLimiter, effective_rate_limits, rate_limit_keys
from mcp_gateway.policy.scopes import ScopeHierarchy

__all__ = [
    "Decision",
    "DecisionKind",
    "ListKind",
    "MemoryRateLimiter",
    "RateLimiter",
    "ScopeHierarchy",
    "ServerPolicy",
    "effective_rate_limits",
    "filter_list_result",
    "rate_limit_keys",
]
