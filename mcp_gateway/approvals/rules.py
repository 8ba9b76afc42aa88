"""The pure rules of human approval: which calls wait, what binds an approval, who may decide, what is said."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from mcp_gateway.auth.principal import Principal
from mcp_gateway.config import ApprovalRule, ServerEntry

# Tokens for the approvals API, the console and the audit read API are for this resource (RFC 8707): a
# token for an MCP route never opens them, and theirs never opens an MCP route.
API_PATH: Final = "/approvals"
# Reading the audit log through the console's JSON API needs this scope (on a token for API_PATH).
AUDIT_READ_SCOPE: Final = "audit:read"
MAX_REASON_CHARS: Final = 1000

Verdict = Literal["approve", "deny"]
# How a held call's wait ended: a person's verdict, or the gateway's ("expired", "withdrawn": the client
# went away, "shutdown": the process is stopping and held calls live in memory only).
Resolution = Literal["approve", "deny", "expired", "withdrawn", "shutdown"]


@dataclass(frozen=True, slots=True)
class Binding:
    """What one approval is valid for: exactly this principal calling this tool on this server with these
    arguments (their RFC 8785 SHA-256)."""

    principal: str  # Principal.binding_key(): issuer, subject and agent
    server: str
    tool: str
    arguments_sha256: str


def binding_of(principal: Principal, server: str, tool: str, arguments_sha256: str) -> Binding:
    return Binding(principal.binding_key(), server, tool, arguments_sha256)


def rule_for(entry: ServerEntry, method: str | None, name: str | None) -> ApprovalRule | None:
    """The approval rule a request falls under: only `tools/call` of a tool named in `[servers.NAME.approvals]`."""
    if method != "tools/call" or name is None or not entry.approvals:
        return None
    return entry.approvals.get(name)


@dataclass(frozen=True, slots=True)
class ApproverRefusal:
    """Why a token may not decide a held call: the HTTP status and a message for the approver."""

    status: int
    message: str


def approver_refusal(
    approver: Principal, asker: Principal, approver_scope: str, *, expires_at: float, now: float
) -> ApproverRefusal | None:
    """None when `approver` may decide `asker`'s held call, else why not.

    Issue 16: the approver holds `approver_scope` (exact scope token, RFC 6749 §3.3) from the same issuer
    and is not the principal who asked: another `sub`, and another client, so that an agent cannot answer
    its own request with a second token.
    """
    if approver_scope not in approver.scopes:
        return ApproverRefusal(403, f"deciding this call needs the scope {approver_scope!r}")
    if approver.issuer != asker.issuer:
        return ApproverRefusal(403, "the approver's token is from another issuer than the caller's")
    if approver.subject is None or approver.subject == asker.subject or approver.agent_id == asker.agent_id:
        return ApproverRefusal(403, "a call cannot be approved by the principal who made it")
    if now >= expires_at:
        return ApproverRefusal(410, "this approval request has expired")
    return None


def parse_verdict(body: Any) -> tuple[Verdict, str | None, str | None]:
    """`{"decision": "approve" | "deny", "reason": "…", "arguments_sha256": "…"?}` → its parts, or ValueError."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    decision = body.get("decision")
    if decision not in ("approve", "deny"):
        raise ValueError('"decision" must be "approve" or "deny"')
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise ValueError(f'"reason" must be a string of at most {MAX_REASON_CHARS} characters')
    digest = body.get("arguments_sha256")
    if digest is not None and not isinstance(digest, str):
        raise ValueError('"arguments_sha256" must be a string')
    return decision, reason or None, digest


def approval_json(approval_id: str, approver: str | None, decision: str, reason: str | None) -> str:
    """The audit record's `approval` field: JSON {id, approver, decision, reason}."""
    value = {"id": approval_id, "approver": approver, "decision": decision, "reason": reason}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def approver_name(approver: Principal) -> str:
    """How a record names the person who decided: their `sub` (approver_refusal requires one)."""
    return approver.subject or approver.agent_id


def progress_body(token: str | int, progress: int, message: str) -> bytes:
    """A `notifications/progress` message for the client's progressToken (MCP basic/utilities/progress)."""
    params = {"progressToken": token, "progress": progress, "message": message}
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": params}).encode()


def waiting_message(approval_id: str, approver_scope: str, seconds_left: float) -> str:
    return (
        f"Awaiting approval {approval_id}: a person holding {approver_scope!r} must approve this call "
        f"(expires in {max(0, int(seconds_left))} s)"
    )


def refusal_text(tool: str, resolution: Resolution, reason: str | None, timeout_seconds: float) -> str:
    """What the client is told when a held call ends without being forwarded."""
    if resolution == "deny":
        return f"Tool {tool!r} was denied by an approver" + (f": {reason}" if reason else "")
    if resolution == "expired":
        return f"Tool {tool!r} was not approved within {timeout_seconds:g} seconds; nothing was forwarded"
    if resolution == "shutdown":
        return f"The gateway is shutting down; the call of tool {tool!r} awaiting approval was not forwarded"
    return f"The call of tool {tool!r} was withdrawn while awaiting approval"
