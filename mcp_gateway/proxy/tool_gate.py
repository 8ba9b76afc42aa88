"""Judging one `tools/call` against the verified catalogue: unknown, quarantined, or arguments against the pin.

DESIGN: "tool must exist in the verified catalogue with its pinned definition"; SECURITY.md: "Tool-call
arguments that do not validate against the pinned input schema: refused, not forwarded."
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_gateway.policy.decision import Decision
from mcp_gateway.proxy import jsonrpc, tool_listing
from mcp_gateway.proxy.context import CallContext, OutcomeKind
from mcp_gateway.proxy.era import Era
from mcp_gateway.proxy.sessions import SessionClaims


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer the gateway gives instead of forwarding, with the rule that refused."""

    rule: str
    body: bytes
    status: int = 200
    kind: OutcomeKind = "denied"


async def judge_tool_call(ctx: CallContext, era: Era, claims: SessionClaims | None, now: float) -> Refusal | None:
    """None when the call may be forwarded; else how to refuse it. Lists the upstream's tools if it must."""
    msg, route, principal = ctx.message, ctx.route, ctx.principal
    catalogue = route.catalogue
    if catalogue is None or msg is None or msg.method != "tools/call" or msg.name is None or principal is None:
        return None
    await tool_listing.ensure_listed(route, msg.name, era, claims, principal, now)
    verdict = catalogue.verdict(msg.name)
    if verdict.status == "unknown":
        return Refusal("unknown_tool", unknown_tool(msg.id, msg.name, era))
    if verdict.status == "unseen":
        text = f"Bad Gateway: the upstream's tool list could not be read, so tool {msg.name!r} cannot be checked"
        return Refusal("tools_sha256", jsonrpc.error_body(msg.id, jsonrpc.INTERNAL_ERROR, text), 502, "upstream_error")
    reason = verdict.quarantine_reason
    if reason is not None or verdict.schema is None:
        text = f"Tool {msg.name!r} is quarantined: {reason}"
        return Refusal("tools_sha256", jsonrpc.error_body(msg.id, jsonrpc.INVALID_PARAMS, text))
    # MCP tools §Tool (inputSchema): arguments are an object; an absent one is the empty object, as servers
    # (the SDK's among them) take it.
    arguments = {} if msg.arguments is None else msg.arguments
    violation = verdict.schema.violation(arguments)
    if violation is not None:
        body = jsonrpc.error_body(msg.id, jsonrpc.INVALID_PARAMS, violation.message(msg.name))
        return Refusal("input_schema", body)
    return None


def unknown_tool(request_id: str | int | None, name: str, era: Era) -> bytes:
    """What the upstream (the `mcp` SDK's server) answers for a tool it does not have, in each era: a tool
    result with isError, so the gateway does not tell a client which names exist but are quarantined."""
    result: dict[str, object] = {"content": [{"type": "text", "text": f"Unknown tool: {name}"}], "isError": True}
    if era.modern:
        result["resultType"] = "complete"  # MCP 2026-07-28: every result says which kind it is
    return jsonrpc.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def refusal_decision(refusal: Refusal, decided: Decision | None) -> Decision:
    return Decision("deny", decided.scopes_required if decided is not None else (), refusal.rule)
