"""Protocol-era rules: which MCP revision a request speaks, and what that revision requires of it.

The gateway serves the stateless revision 2026-07-28 and the handshake revisions 2025-11-25 and
2025-06-18 side by side; it never translates between them. Everything here is a pure function of the
request's headers and its classified message.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request, find_duplicated_routing_header
from mcp_types.methods import CLIENT_REQUESTS

from mcp_gateway.errors import ProtocolRejected, TransportRejected
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.transport.asgi import Headers, header

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18")

# Which spec methods exist in which revision, from the SDK's own method table.
_MODERN_REQUESTS = frozenset((method, version) for method, version in CLIENT_REQUESTS if version in MODERN_VERSIONS)
_SPEC_REQUESTS = frozenset(method for method, _ in CLIENT_REQUESTS)
# An absent MCP-Protocol-Version header means 2025-03-26 (MCP transports §Protocol Version Header).
_UNDECLARED = "2025-03-26"


@dataclass(frozen=True, slots=True)
class Era:
    """The revision one request speaks: 2026-07-28 (`modern`) or a handshake revision."""

    modern: bool
    version: str | None  # None: an initialize that negotiates its version in the body


def _declared_version(headers: Headers) -> str | None:
    raw = header(headers, b"mcp-protocol-version")
    return raw.decode("latin-1") if raw is not None else None


def unsupported_version(requested: str) -> ProtocolRejected:
    # MCP 2026-07-28: data.supported lists the versions a request may name without a handshake, as
    # server/discover's supportedVersions does; handshake versions are negotiated by initialize.
    return ProtocolRejected(
        f"Unsupported protocol version {requested!r}; supported: {', '.join(MODERN_VERSIONS)}, "
        f"or {' and '.join(HANDSHAKE_VERSIONS)} after initialize",
        jsonrpc_code=jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
        data={"supported": list(MODERN_VERSIONS), "requested": requested},
    )


def method_not_found(msg: jsonrpc.ClientMessage, era: Era) -> ProtocolRejected:
    # JSON-RPC 2.0 §5.1: -32601; MCP 2026-07-28 maps it to HTTP 404 (the handshake eras answer 200).
    return ProtocolRejected(
        "Method not found",
        jsonrpc_code=jsonrpc.METHOD_NOT_FOUND,
        status_code=404 if era.modern else 200,
        data=msg.method,
    )


def post_era(headers: Headers, msg: jsonrpc.ClientMessage) -> Era:
    """The era of a POST, from its MCP-Protocol-Version header; an unserved version is a 400."""
    version = _declared_version(headers)
    if version in MODERN_VERSIONS:
        return Era(True, version)
    if version in HANDSHAKE_VERSIONS:
        return Era(False, version)
    if version is None and msg.method == "initialize":
        return Era(False, None)  # the handshake negotiates the version in the body
    # MCP transports §Protocol Version Header: an invalid or unsupported version → 400;
    # an absent header means 2025-03-26, which this gateway does not serve.
    raise unsupported_version(version if version is not None else _UNDECLARED)


def stream_era(headers: Headers) -> Era:
    """The era of a GET or DELETE: only the handshake revisions have streams and sessions to end."""
    version = _declared_version(headers)
    if version in MODERN_VERSIONS:
        # MCP 2026-07-28: no standalone streams and no sessions: GET and DELETE are 405.
        raise TransportRejected(
            "Method Not Allowed in protocol 2026-07-28", status_code=405, headers=[("allow", "POST")]
        )
    if version not in HANDSHAKE_VERSIONS:
        # As for POST: an absent header means 2025-03-26, which this gateway does not serve.
        raise unsupported_version(version if version is not None else _UNDECLARED)
    return Era(False, version)


def check_request(headers: Headers, msg: jsonrpc.ClientMessage, era: Era) -> None:
    """What the era requires of this message beyond its version (routing headers, removed methods)."""
    if not era.modern:
        return
    check_modern_headers(headers, msg)
    removed = msg.method in _SPEC_REQUESTS and (msg.method, era.version) not in _MODERN_REQUESTS
    if msg.kind == "request" and removed:
        # MCP 2026-07-28: a method this revision removed (initialize, ping, logging/setLevel,
        # resources/subscribe, ...) is not found: 404 with -32601.
        raise method_not_found(msg, era)


def check_modern_headers(headers: Headers, msg: jsonrpc.ClientMessage) -> None:
    # MCP 2026-07-28 transports: Mcp-Method / Mcp-Name must match the body (400, -32020); a
    # duplicated routing header would let two readers disagree, so it is refused too.
    # RFC 9110 §5.5: a field value excludes leading and trailing whitespace (httptools keeps it).
    text_headers = [
        (k.decode("latin-1"), v.decode("latin-1").strip(" \t")) for k, v in headers if k.startswith(b"mcp-")
    ]
    duplicated = find_duplicated_routing_header(text_headers)
    if duplicated is not None:
        raise ProtocolRejected(f"{duplicated} header appears more than once", jsonrpc_code=jsonrpc.HEADER_MISMATCH)
    if msg.kind != "request":
        method = header(headers, b"mcp-method")
        if msg.method is not None and method is not None and method.decode("latin-1") != msg.method:
            raise ProtocolRejected("mcp-method header does not match the body", jsonrpc_code=jsonrpc.HEADER_MISMATCH)
        return
    verdict = classify_inbound_request(msg.body, headers=dict(text_headers), supported_modern_versions=MODERN_VERSIONS)
    if isinstance(verdict, InboundLadderRejection):
        raise ProtocolRejected(verdict.message, jsonrpc_code=verdict.code, data=verdict.data)


def negotiable_initialize(body: bytes, msg: jsonrpc.ClientMessage) -> bytes:
    """The initialize to forward: the client's, unless it asks for a version this gateway does not serve.

    MCP lifecycle §Version Negotiation: "If the server supports the requested protocol version, it MUST
    respond with the same version. Otherwise, the server MUST respond with another protocol version it
    supports." The gateway is the server here, so it asks the upstream for its own latest handshake version
    instead; the client then sees that version and decides, as the spec says, whether it can go on. Left as
    it was, the upstream could settle on a version every later request would be refused for (400).
    """
    params = msg.body.get("params")
    if not isinstance(params, dict) or params.get("protocolVersion") in HANDSHAKE_VERSIONS:
        return body
    if not isinstance(params.get("protocolVersion"), str):
        return body  # not an initialize the upstream can accept either way: let it answer -32602
    return jsonrpc.dumps({**msg.body, "params": {**params, "protocolVersion": HANDSHAKE_VERSIONS[0]}})
