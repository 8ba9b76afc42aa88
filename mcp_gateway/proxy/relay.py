"""Judging each message the upstream sends before it reaches the client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.listing import filter_list_result

# Result keys that identify a list result even when we do not know which request it answers
# (a response replayed on a resumed GET stream): filter by shape so nothing unfiltered slips out.
_LIST_KEYS = (
    ("tools", "tools/list"),
    ("resources", "resources/list"),
    ("resourceTemplates", "resources/templates/list"),
    ("prompts", "prompts/list"),
)

Verdict = Literal["relay", "drop", "reject_server_request"]


@dataclass(slots=True)
class StreamState:
    """What one relayed exchange has seen so far; feeds the audit outcome."""

    request_id: Any = None  # the id the client sent on this POST, or None for GET streams
    request_method: str | None = None
    answered: bool = False
    outcome: str | None = None  # ok | tool_error | upstream_error
    garbage: int = 0
    rejected_server_requests: list[tuple[Any, str]] = field(default_factory=list)


@dataclass(slots=True)
class UpstreamMessageJudge:
    """Checks one upstream JSON-RPC message and returns what to send on (bytes) or None to drop it."""

    policy: ServerPolicy
    granted: frozenset[str]
    governs_server_requests: bool  # handshake eras only: 2026-07-28 has no server-to-client requests

    def judge(self, data: bytes, state: StreamState) -> bytes | None:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            state.garbage += 1
            return None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            state.garbage += 1
            return None
        method = message.get("method")
        if method is not None:
            if not isinstance(method, str):
                state.garbage += 1
                return None
            if "id" in message and self.governs_server_requests and not self.policy.allows_server_request(method):
                # The admin did not allow this server-to-client request (sampling, elicitation, roots).
                state.rejected_server_requests.append((message.get("id"), method))
                return None
            return data
        if "result" not in message and "error" not in message:
            state.garbage += 1
            return None
        msg_id = message.get("id")
        if state.request_id is not None:
            if msg_id != state.request_id or state.answered:
                # SECURITY.md: ids the client never sent, or a second answer, are never relayed.
                state.garbage += 1
                return None
            state.answered = True
            state.outcome = _outcome(message)
        result = message.get("result")
        if isinstance(result, dict):
            list_method = state.request_method if state.request_method in _LIST_METHODS else _infer_list(result)
            if list_method is not None:
                message["result"] = filter_list_result(list_method, result, self.policy, self.granted)
                return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        return data


_LIST_METHODS = frozenset(m for _, m in _LIST_KEYS)


def _infer_list(result: dict[str, Any]) -> str | None:
    for key, method in _LIST_KEYS:
        if key in result:
            return method
    return None


def _outcome(message: dict[str, Any]) -> str:
    if "error" in message:
        return "tool_error"
    result = message.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return "tool_error"
    return "ok"
