"""Which policy engine judges a route's calls: the registry of deciders, chosen by `[policy]`.

Scopes (`ScopeDecider`) always decide first; an engine configured in `[policy]` wraps them. A new engine
is one module with a `Decider` plus one branch here. Engines load only when configured, so a gateway
without Cedar policies never imports cedarpy.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp_gateway.config import GatewayConfig
from mcp_gateway.policy.decider import Decider, ScopeDecider
from mcp_gateway.policy.decision import ServerPolicy


def decider_factory(config: GatewayConfig) -> Callable[[ServerPolicy], Decider]:
    """Per route, the decider `[policy]` asks for; policy files are parsed once, here (ConfigError if wrong)."""
    settings = config.policy
    if not settings.cedar and not settings.shadow_cedar:
        return ScopeDecider
    from mcp_gateway.policy.cedar import CedarDecider, CedarPolicies

    enforced = CedarPolicies.load(config.path_for(settings.cedar), "cedar") if settings.cedar else None
    shadow = (
        CedarPolicies.load(config.path_for(settings.shadow_cedar), "shadow_cedar") if settings.shadow_cedar else None
    )
    return lambda policy: CedarDecider(ScopeDecider(policy), enforced, shadow)
