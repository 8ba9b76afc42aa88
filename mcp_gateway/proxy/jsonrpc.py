"""Parsing and classifying the JSON-RPC message a client POSTs, without trusting its shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from mcp_gateway.errors import ProtocolRejected

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

# Methods whose target (tool name, resource URI, prompt name) the policy judges.
NAMED_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri", "resources/subscribe": "uri"}
MAX_DEPTH = 64

MessageKind = Literal["request", "notification", "response"]


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One JSON-RPC message from the client, with what the gateway needs to judge it."""

    kind: MessageKind
    body: dict[str, Any]
    method: str | None
    id: str | int | None
    name: str | None  # tool name / resource URI / prompt name for NAMED_METHODS
    arguments: Any  # tools/call arguments (any JSON), else None
    request_context: str | None  # params._meta.request_context: the agent's stated reason


def parse_json(raw: bytes) -> Any:
    """Decode a body; malformed or absurdly nested JSON is a 400, never a RecursionError."""
    try:
        # What json.loads(raw, parse_constant=...) does, without building a decoder per call.
        value = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and oversized integer literals.
        raise ProtocolRejected("Parse error: the body is not valid JSON", jsonrpc_code=PARSE_ERROR) from exc
    # Nesting never exceeds the number of opening brackets (those inside strings only overcount), so
    # the usual small body skips the walk: two C-speed counts instead of a visit of every container.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and not _depth_within(value, MAX_DEPTH):
        raise ProtocolRejected(f"Parse error: JSON nested deeper than {MAX_DEPTH} levels", jsonrpc_code=PARSE_ERROR)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


# RFC 7493 (I-JSON) §2.2: NaN and Infinity are not JSON numbers; refusing them keeps every argument
# digest well defined. A decoder holds no state between calls, so one serves every request.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _depth_within(value: Any, limit: int) -> bool:
    # Iterative so that hostile depth cannot exhaust the stack; only containers are visited.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return True


def classify(value: Any) -> ClientMessage:
    """Classify one decoded JSON-RPC message; batches are refused (removed in MCP 2025-06-18)."""
    if isinstance(value, list):
        # MCP 2025-06-18 changelog: JSON-RPC batching removed; 2026-07-28: one message per POST.
        raise ProtocolRejected("Invalid Request: JSON-RPC batches are not supported", jsonrpc_code=INVALID_REQUEST)
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise ProtocolRejected("Invalid Request: expected a JSON-RPC 2.0 object", jsonrpc_code=INVALID_REQUEST)
    msg_id = value.get("id")
    if "id" in value and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int)):
        # MCP basic: request ids MUST be a string or integer, never null.
        raise ProtocolRejected("Invalid Request: id must be a string or an integer", jsonrpc_code=INVALID_REQUEST)
    method = value.get("method")
    if method is None:
        if "id" not in value or ("result" in value) == ("error" in value):
            raise ProtocolRejected("Invalid Request: neither a request nor a response", jsonrpc_code=INVALID_REQUEST)
        return ClientMessage("response", value, None, msg_id, None, None, None)
    if not isinstance(method, str) or not method:
        raise ProtocolRejected("Invalid Request: method must be a non-empty string", jsonrpc_code=INVALID_REQUEST)
    params = value.get("params")
    if params is not None and not isinstance(params, dict):
        raise ProtocolRejected("Invalid params: params must be an object", jsonrpc_code=INVALID_PARAMS)
    params = params or {}
    name: str | None = None
    key = NAMED_METHODS.get(method)
    if key is not None:
        target = params.get(key)
        # Checked by require_target once the method is known to exist: a removed method is "not found".
        name = target if isinstance(target, str) and target else None
    meta = params.get("_meta")
    reason = meta.get("request_context") if isinstance(meta, dict) else None
    return ClientMessage(
        "request" if "id" in value else "notification",
        value,
        method,
        msg_id,
        name,
        params.get("arguments") if method == "tools/call" else None,
        reason if isinstance(reason, str) else None,
    )


def require_target(msg: ClientMessage) -> None:
    """A request to a method that names its target (tool, prompt, resource) must name it as a string."""
    if msg.kind == "request" and msg.name is None and msg.method in NAMED_METHODS:
        key = NAMED_METHODS[msg.method]
        raise ProtocolRejected(f"Invalid params: {msg.method} needs a string params.{key}", jsonrpc_code=INVALID_PARAMS)


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8, for a message the gateway re-encodes. A lone surrogate (which `parse_json` and
    `json.loads` keep from a "\\ud800" escape, valid JSON syntax but not UTF-8) falls back to ASCII escapes,
    so hostile text from either side is relayed as the escape it arrived as, never a 500."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def error_body(msg_id: Any, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "error": error}, separators=(",", ":")).encode()
