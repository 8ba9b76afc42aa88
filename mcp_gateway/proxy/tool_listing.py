"""The gateway's own `tools/list` to the upstream, so the catalogue knows a tool before judging a call to it.

A client may call a tool without listing first (the SDK clients do after a restart, a hostile one always
does). Its pinned definition, and so its input schema, is only known from a tools/list; and "the tool does
not exist upstream" is only known from a whole listing. So when the catalogue has not seen a complete
listing (or the name is new to it, at most once per RELIST_SECONDS), the gateway lists the upstream's
tools itself, in the caller's era (and handshake session), with the gateway's credential, before it
decides. A listing that fails leaves the catalogue as it was: the call is then refused, never forwarded
unchecked.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp_gateway.auth.principal import Principal
from mcp_gateway.credentials import CredentialRequest
from mcp_gateway.errors import UpstreamError
from mcp_gateway.proxy import jsonrpc
from mcp_gateway.proxy.catalogue import ToolCatalogue
from mcp_gateway.proxy.era import Era
from mcp_gateway.proxy.route import Route
from mcp_gateway.proxy.sessions import SessionClaims
from mcp_gateway.proxy.sse import SSEParser

logger = logging.getLogger(__name__)

_MAX_PAGES = 20
_REQUEST_ID = "mcp-gateway-tools-list"


async def ensure_listed(
    route: Route, name: str, era: Era, claims: SessionClaims | None, principal: Principal, now: float
) -> None:
    """List the upstream's tools into the route's catalogue if a call to `name` needs it (single flight)."""
    catalogue = route.catalogue
    if catalogue is None or not catalogue.needs_listing(name, now):
        return
    async with catalogue.listing_lock:
        if not catalogue.needs_listing(name, now):
            return  # another call listed them while this one waited
        catalogue.listed_at = now
        try:
            await _list_tools(route, catalogue, era, claims, principal)
        except (UpstreamError, ValueError, KeyError, TypeError) as exc:
            logger.warning("listing the tools of %s failed: %s", route.name, type(exc).__name__)


async def _list_tools(
    route: Route, catalogue: ToolCatalogue, era: Era, claims: SessionClaims | None, principal: Principal
) -> None:
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        result = await _request_page(route, era, claims, principal, cursor)
        cursor = result.get("nextCursor")
        catalogue.filter_tools(result["tools"], complete=not isinstance(cursor, str))
        if not isinstance(cursor, str):
            return


async def _request_page(
    route: Route, era: Era, claims: SessionClaims | None, principal: Principal, cursor: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
    headers = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
    if era.version is not None:
        headers.append((b"mcp-protocol-version", era.version.encode("ascii")))
    if era.modern:
        # MCP 2026-07-28: every request names its method in Mcp-Method and carries the protocol
        # version and client capabilities in params._meta.
        headers.append((b"mcp-method", b"tools/list"))
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": era.version,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    elif claims is not None and claims.upstream_session_id:
        headers.append((b"mcp-session-id", claims.upstream_session_id.encode("latin-1")))
    asked = CredentialRequest(route.name, route.entry.url, principal, "tools/list", None, ())
    headers.extend((await route.credentials.issue(asked)).headers)
    body = jsonrpc.dumps({"jsonrpc": "2.0", "id": _REQUEST_ID, "method": "tools/list", "params": params})
    response = await route.pool.request("POST", route.upstream_path, headers, body)
    try:
        if response.status != 200:
            raise ValueError(f"status {response.status}")
        raw = await response.read()  # capped at the pool's max_body_bytes
        content_type = (response.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    finally:
        await response.aclose()
    return _result_of(raw, content_type == b"text/event-stream")


def _result_of(raw: bytes, sse: bool) -> dict[str, Any]:
    """The `result` answering our request, from a JSON body or an SSE stream of messages."""
    if sse:
        parser = SSEParser(len(raw) + 1)
        messages = [json.loads(event.data) for event in parser.feed(raw) if event.data]
    else:
        messages = [json.loads(raw)]
    for message in messages:
        if isinstance(message, dict) and message.get("id") == _REQUEST_ID and isinstance(message.get("result"), dict):
            result: dict[str, Any] = message["result"]
            if not isinstance(result.get("tools"), list):
                raise ValueError("tools/list result without a tools array")
            return result
    raise ValueError("no tools/list result")
