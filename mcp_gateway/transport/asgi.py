"""Small raw-ASGI helpers: the ASGI types, header lookup and plain responses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

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
