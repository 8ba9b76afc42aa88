"""Small raw-ASGI helpers: header lookup, capped body reading, plain responses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from mcp_gateway.errors import TransportRejected

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

JSON_CT = (b"content-type", b"application/json")
NO_STORE = (b"cache-control", b"no-store")


def header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def header_count(headers: Headers, name: bytes) -> int:
    return sum(1 for key, _ in headers if key == name)


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


async def respond(
    send: Send, status: int, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = (), *, json_body: bool = True
) -> None:
    head = [(b"content-length", str(len(body)).encode()), *headers]
    if body and json_body:
        head.append(JSON_CT)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, value: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await respond(send, status, json.dumps(value, separators=(",", ":")).encode(), headers)
