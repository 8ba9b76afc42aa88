"""Media types a client must send and accept on an MCP endpoint (MCP transports §Sending Messages)."""

from __future__ import annotations

from mcp_gateway.errors import TransportRejected
from mcp_gateway.transport.asgi import Headers, header


def check_post_media_types(headers: Headers) -> None:
    """A POST carries JSON and accepts JSON (415 / 406)."""
    content_type = header(headers, b"content-type") or b""
    if not content_type.split(b";", 1)[0].strip().lower() == b"application/json":
        raise TransportRejected("Unsupported Media Type: POST bodies must be application/json", status_code=415)
    accept = (header(headers, b"accept") or b"").lower()
    if b"application/json" not in accept and b"*/*" not in accept and b"application/*" not in accept:
        # MCP transports §Sending Messages: the client MUST accept application/json and text/event-stream.
        raise TransportRejected("Not Acceptable: Accept must include application/json", status_code=406)


def check_stream_accept(headers: Headers) -> None:
    """MCP transports §Listening for Messages: a GET must accept text/event-stream (406)."""
    if b"text/event-stream" not in (header(headers, b"accept") or b""):
        raise TransportRejected("Not Acceptable: GET requires Accept: text/event-stream", status_code=406)
