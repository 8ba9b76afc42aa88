"""Judging each message the upstream sends before it reaches the client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.listing import filter_list_result
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.catalogue import ToolCatalogue
from mcp_gateway.proxy.context import OutcomeKind
from mcp_gateway.proxy.continuations import BoundContinuations
from mcp_gateway.proxy.server_request_ids import BoundServerRequestIds

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
    resumed: bool = False  # a GET with Last-Event-ID: it replays a POST stream, whose response may be on it
    answered: bool = False
    outcome: OutcomeKind | None = None  # ok | tool_error | upstream_error | server_request_refused
    garbage: int = 0
    last_event_id: bytes | None = None  # the newest SSE event id relayed: the client can resume after it
    rejected_server_requests: list[tuple[Any, str]] = field(default_factory=list)


@dataclass(slots=True)
class UpstreamMessageJudge:
    """Checks one upstream JSON-RPC message and returns what to send on (bytes) or None to drop it."""

    policy: ServerPolicy
    granted: frozenset[str]
    governs_server_requests: bool  # handshake eras; at 2026-07-28 a server-to-client request is dropped
    secrets: tuple[bytes, ...] = ()  # the gateway's upstream credentials in use
    catalogue: ToolCatalogue | None = None  # pinned tool definitions; drifted ones are quarantined
    initialize_versions: tuple[str, ...] | None = None  # an initialize's answer must settle on one of these
    continuations: BoundContinuations | None = None  # seals each requestState to this principal and route
    server_request_ids: BoundServerRequestIds | None = None  # handshake sessions: tags relayed request ids

    def redact(self, data: bytes) -> bytes:
        """SECURITY.md: the injected credential never appears in responses, even if the upstream echoes it."""
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, b"[REDACTED]")
        return data

    def judge(self, data: bytes, state: StreamState) -> bytes | None:
        data = self.redact(data)
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            state.garbage += 1
            return None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            state.garbage += 1
            return None
        if "method" in message:
            return self._server_message(data, message, state)
        if not _accepted_response(message, state):
            state.garbage += 1
            return None
        result = message.get("result")
        return self._judge_result(data, message, result, state) if isinstance(result, dict) else data

    def _server_message(self, data: bytes, message: dict[str, Any], state: StreamState) -> bytes | None:
        """A server-to-client request or notification: relayed only if the era and `server_requests` allow."""
        method = message["method"]
        if not isinstance(method, str):
            state.garbage += 1
            return None
        if "id" not in message:
            return data  # a notification (progress, logging, list_changed, ...)
        request_id = message["id"]
        if not self.governs_server_requests or isinstance(request_id, bool) or not isinstance(request_id, str | int):
            # MCP 2026-07-28 has no server-to-client requests (input-required results replace them); in
            # the other eras an id is a string or an integer (MCP basic §Requests), or nothing answers it.
            state.garbage += 1
            return None
        ids = self.server_request_ids
        if ids is None or not self.policy.allows_server_request(method):
            # The admin did not allow this server-to-client request (sampling, elicitation, roots), or
            # there is no session to bind its id to: the gateway answers it upstream itself.
            state.rejected_server_requests.append((request_id, method))
            return None
        # The client sees a tag bound to this session; only its answer here is forwarded (server_request_ids.py).
        return ids.relabel(message)

    def _judge_result(self, data: bytes, message: dict[str, Any], result: dict[str, Any], state: StreamState) -> bytes:
        """A result for the client's request: version settled, input requests governed, lists filtered."""
        versions = self.initialize_versions
        version = result.get("protocolVersion")
        if versions is not None and state.request_method == "initialize" and version not in versions:
            return _unserved_version(message, version, versions, state)
        if "inputRequests" in result:
            refused = self._refused_input_request(result["inputRequests"])
            if refused is not None:
                # MCP 2026-07-28 asks the client through an input-required result instead of a
                # server-to-client request; the same `server_requests` policy governs it.
                state.outcome = "server_request_refused"
                text = f"{refused} is not permitted by the gateway"
                return jsonrpc.error_body(message.get("id"), jsonrpc.INVALID_REQUEST, text)
        # MCP 2026-07-28 input-required results: the continuation is this principal's alone (continuations.py).
        sealed = self.continuations is not None and self.continuations.seal_result(result)
        list_method = state.request_method if state.request_method in _LIST_METHODS else _infer_list(result)
        if list_method is None:
            return jsonrpc.dumps(message) if sealed else data
        if list_method == "tools/list" and self.catalogue is not None:
            # The catalogue sees the whole listing (before scope filtering), so a tool this token may not
            # see still exists for it: only a name the upstream never presented is unknown.
            complete = not isinstance(result.get("nextCursor"), str)
            result = {**result, "tools": self.catalogue.filter_tools(result.get("tools"), complete=complete)}
        message["result"] = filter_list_result(list_method, result, self.policy, self.granted)
        return jsonrpc.dumps(message)

    def _refused_input_request(self, requests: Any) -> str | None:
        """The first method in an `inputRequests` map that the policy does not allow, if any."""
        if not isinstance(requests, dict):
            return "an input request"
        for request in requests.values():
            method = request.get("method") if isinstance(request, dict) else None
            if not isinstance(method, str):
                return "an input request"
            if not self.policy.allows_server_request(method):
                return method
        return None


_LIST_METHODS = frozenset(m for _, m in _LIST_KEYS)


def _unserved_version(message: dict[str, Any], version: Any, versions: tuple[str, ...], state: StreamState) -> bytes:
    # The gateway serves its clients only the handshake versions it implements; a session the upstream
    # settled on another version would meet 400 at every later request (MCP transports §Protocol
    # Version Header), so the initialize fails now, with the reason, instead.
    state.outcome = "upstream_error"
    return jsonrpc.error_body(
        message.get("id"),
        jsonrpc.INTERNAL_ERROR,
        f"The upstream settled on protocol version {version!r}, which the gateway does not serve; "
        f"it serves {', '.join(versions)}",
        {"supported": list(versions), "upstream": version},
    )


def _accepted_response(message: dict[str, Any], state: StreamState) -> bool:
    """Whether a response may be relayed on this stream; marks the request answered if so."""
    if "result" not in message and "error" not in message:
        return False
    if state.request_id is not None:
        if message.get("id") != state.request_id or state.answered:
            # SECURITY.md: ids the client never sent, or a second answer, are never relayed.
            return False
        state.answered = True
        state.outcome = _outcome(message)
        return True
    if not state.resumed or state.answered:
        # MCP transports §Listening for Messages: the standalone GET stream carries no responses;
        # a resumed stream replays the one response of the stream it resumes.
        return False
    state.answered = True
    return True


def _infer_list(result: dict[str, Any]) -> str | None:
    for key, method in _LIST_KEYS:
        if key in result:
            return method
    return None


def _outcome(message: dict[str, Any]) -> OutcomeKind:
    if "error" in message:
        return "tool_error"
    result = message.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return "tool_error"
    return "ok"
