"""Size caps on what a client sends: the request body (413), refused before it is buffered."""

from __future__ import annotations

from mcp_gateway.errors import TransportRejected
from mcp_gateway.transport.asgi import Headers, Receive, header


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
