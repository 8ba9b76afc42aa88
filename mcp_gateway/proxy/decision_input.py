"""What the policy is asked about one request: the facts of the call and of its principal, as values."""

from __future__ import annotations

from mcp_gateway.auth.principal import Principal
from mcp_gateway.policy.decider import DecisionInput
from mcp_gateway.proxy import era as eras
from mcp_gateway.proxy.context import CallContext
from mcp_gateway.proxy.route import Route


def decision_input(route: Route, ctx: CallContext, principal: Principal, era: eras.Era) -> DecisionInput:
    msg = ctx.message
    assert msg is not None and msg.method is not None
    params = msg.body.get("params")
    return DecisionInput(
        server=route.name,
        method=msg.method,
        params=params if isinstance(params, dict) else None,
        scopes=principal.scopes,
        agent_id=principal.agent_id,
        delegating_user=principal.delegating_user,
        issuer=principal.issuer,
        name=msg.name,
        arguments=msg.arguments,
        request_context=msg.request_context,
        era=era.version,
        now=ctx.timestamp,
        client_address=ctx.client_address,
    )
