"""Judging a client message by its JSON-RPC shape: requests carry an id, only spec notifications go without.

The authorization step judges requests; a message that dodges it by its shape (a governed method sent
without an `id`, a response answering nothing) must never reach the upstream. Everything here is a pure
function of the classified message and its era, from the SDK's own method tables.
"""

from __future__ import annotations

from mcp_types.methods import CLIENT_NOTIFICATIONS

from mcp_gateway.errors import MessageRefused
from mcp_gateway.policy.decision import Decision
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.context import CallContext
from mcp_gateway.proxy.era import Era

# (method, revision) pairs the spec defines as client-to-server notifications.
_NOTIFICATIONS = frozenset(CLIENT_NOTIFICATIONS)
REFUSED_SHAPE = Decision("deny", (), "message_shape")


def allowed_notification(method: str | None, version: str | None) -> bool:
    """Whether `method` is a notification the client may send in protocol revision `version`."""
    return method is not None and (method, version) in _NOTIFICATIONS


def judge_shape(ctx: CallContext, era: Era) -> None:
    """Refuse a message whose shape would let it pass unjudged; requests go on to authorization.

    JSON-RPC 2.0 §4.1: a message without an `id` is a notification and gets no answer, so a server
    that treats a `tools/call` without an id as one runs the tool unanswered; MCP defines the methods
    it governs as requests (basic §Requests: "Requests MUST include a string or integer ID"), and only
    the notifications of the negotiated revision (schema: ClientNotification) exist as notifications.
    """
    msg = ctx.message
    assert msg is not None
    if msg.kind == "request":
        return
    if msg.kind == "notification":
        if allowed_notification(msg.method, era.version):
            return
        ctx.decision = REFUSED_SHAPE
        raise MessageRefused(
            f"Invalid Request: {msg.method!r} is not a notification protocol {era.version} defines; "
            "a request needs an id",
            jsonrpc_code=jsonrpc.INVALID_REQUEST,
        )
    if era.modern:
        # MCP 2026-07-28 has no server-to-client requests, so a client never sends a response: input
        # the server asks for travels back as inputResponses on a retried request.
        ctx.decision = REFUSED_SHAPE
        raise MessageRefused(
            f"Invalid Request: protocol {era.version} has no client responses; "
            "answer input requests by retrying the request with inputResponses",
            jsonrpc_code=jsonrpc.INVALID_REQUEST,
        )
