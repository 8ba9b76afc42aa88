"""Size caps on what a client sends: headers (431) and the request body (413), refused before buffering."""

from __future__ import annotations

from itertools import chain

from mcp_gateway.errors import TransportRejected
from mcp_gateway.transport.asgi import Headers, Receive, header


def check_header_size(headers: Headers, cap: int) -> None:
    """RFC 6585 §5: 431, refused before any token is parsed or any key looked up."""
    if sum(map(len, chain.from_iterable(headers))) > cap:
        raise TransportRejected("Request Header Fields Too Large", status_code=431)


async def read_body(receive: Receive, headers: Headers, cap: int) -> bytes:
    """Read the whole request body, refusing more than `cap` bytes before buffering them (413)."""
    declared = header(headers, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise TransportRejected("Bad Request: invalid Content-Length", status_code=400)
        if int(declared) > cap:
            raise TransportRejected(f"Payload Too Large: the body limit is {cap} bytes", status_code=413)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise TransportRejected("Client disconnected", status_code=499)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            # Chunked bodies have no Content-Length: count as they arrive and stop at the cap.
            raise TransportRejected(f"Payload Too Large: the body limit is {cap} bytes", status_code=413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
