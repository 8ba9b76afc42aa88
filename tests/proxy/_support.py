"""Helpers for the proxy's end-to-end tests: raw MCP requests, an SSE reader, tiny scripted upstreams.

The SDK client hides statuses and headers, so the failure-path tests speak raw HTTP with httpx2 and
read SSE with `read_events`, a parser written independently of the gateway's own (`proxy/sse.py`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.app import Gateway, create_app
from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.config import load_config
from tests._mcp import MODERN_META
from tests._stack import Stack, _bound_socket, _serve_on

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# A scripted upstream's answer to one request: (scope, receive, send, the decoded JSON-RPC body).
Script = Callable[[Scope, Receive, Send, dict[str, Any]], Awaitable[None]]


def call_body(tool: str, arguments: dict[str, Any] | None = None, request_id: int = 2, **params: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments or {}, **params},
    }


def json_error(response: httpx2.Response) -> dict[str, Any]:
    """The `error` member of a JSON-RPC error body, checking that the body is one."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    error: dict[str, Any] = body["error"]
    return error


@dataclass
class Event:
    """One SSE event as a client sees it."""

    data: str = ""
    id: str | None = None
    event: str | None = None
    retry: str | None = None
    has_data: bool = False

    def message(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


class _EventReader:
    """WHATWG SSE parsing over lines (minus BOM handling); an event with an id but no data still counts."""

    def __init__(self) -> None:
        self.current = Event()

    def line(self, line: str) -> Event | None:
        current = self.current
        if line == "":
            self.current = Event()
            if current.has_data or current.id is not None or current.retry is not None:
                return current
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            current.data = f"{current.data}\n{value}" if current.has_data else value
            current.has_data = True
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "retry":
            current.retry = value
        return None


async def read_events(response: httpx2.Response) -> AsyncIterator[Event]:
    """Yield SSE events from a streaming response as each one completes."""
    reader = _EventReader()
    async for line in response.aiter_lines():
        event = reader.line(line)
        if event is not None:
            yield event


def parse_events(text: str) -> list[Event]:
    """Every SSE event in a whole response body."""
    reader = _EventReader()
    events = [reader.line(line) for line in text.splitlines()]
    return [event for event in events if event is not None]


async def messages_until_response(response: httpx2.Response, request_id: Any) -> list[dict[str, Any]]:
    """Every JSON-RPC message on an SSE response up to and including the one answering `request_id`."""
    out: list[dict[str, Any]] = []
    async for event in read_events(response):
        if not event.data:
            continue
        message = event.message()
        out.append(message)
        if message.get("id") == request_id and "method" not in message:
            break
    return out


@asynccontextmanager
async def sdk_client(
    stack: Stack, token: str, *, mode: str, on_response: Callable[[httpx2.Response], Any] | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    """The SDK client through the gateway, optionally watching every HTTP response it receives."""
    hooks: dict[str, list[Callable[..., Any]]] = {}
    if on_response is not None:

        async def hook(response: httpx2.Response) -> None:
            on_response(response)

        hooks["response"] = [hook]
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30, event_hooks=hooks) as http:
        transport = streamable_http_client(stack.mcp_url(), http_client=http)
        async with Client(transport, mode=mode, **kwargs) as client:  # type: ignore[arg-type]
            yield client


class EarlyTap:
    """ASGI middleware for an upstream that records each JSON-RPC body as soon as it has been received.

    The stack's own tap completes its record when the upstream's handler returns, which may be just after
    the client has its answer; this one records before the upstream can answer, so tests need no waiting.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def tapped_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body") and body:
                    self.messages.append(json.loads(body))
            return message

        await self.app(scope, tapped_receive, send)

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and m.get("method") == method]


class WatchedAuditSink(MemoryAuditSink):
    """A memory sink a test can wait on: outcome records are written after the client has its answer."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = anyio.Event()

    def append_nowait(self, record: AuditRecord) -> None:
        super().append_nowait(record)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[AuditRecord], bool]) -> list[AuditRecord]:
        """The records matching `predicate`, once there is at least one (wrap in anyio.fail_after)."""
        while not (found := [r for r in self.records if predicate(r)]):
            await self._changed.wait()
        return found


# -- scripted upstreams ------------------------------------------------------------------------------


@dataclass
class ScriptedUpstream:
    """A raw ASGI upstream that answers every POST with `script(scope, receive, send, body)`.

    It records what it received and signals the test through events, so that nothing waits on a sleep.
    """

    script: Script
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnected: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        raw = await read_body(receive)
        self.headers.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        body = json.loads(raw) if raw else {}
        self.bodies.append(body)
        try:
            await self.script(scope, receive, send, body)
        finally:
            self.finished.set()

    async def wait_for_disconnect(self, receive: Receive) -> None:
        await wait_for_disconnect(receive)
        self.disconnected.set()


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Complete an ASGI lifespan's startup and shutdown for an app that has nothing to start."""
    while (await receive())["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI HTTP request."""
    raw = bytearray()
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(raw)


async def wait_for_disconnect(receive: Receive) -> None:
    """Read an ASGI request's messages until the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_raw(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None = b"application/json",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    head = [(b"content-length", str(len(body)).encode()), *headers]
    if content_type is not None:
        head.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def start_sse(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})


async def send_chunk(send: Send, chunk: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": more})


def sse_message(message: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: message\ndata: {json.dumps(message)}\n\n".encode()


def result_for(body: dict[str, Any], text: str = "done") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": body["id"],
        "result": {"content": [{"type": "text", "text": text}], "isError": False},
    }


def progress_for(body: dict[str, Any], step: int) -> dict[str, Any]:
    token = body["params"].get("_meta", {}).get("progressToken", "p")
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": step}}


# -- a gateway built by hand, for configurations gateway_stack cannot express ------------------------------


@dataclass
class BareGateway:
    app: Gateway
    base_url: str
    audit: MemoryAuditSink


@asynccontextmanager
async def bare_gateway(directory: Path, *, upstream_url: str, issuer: str, jwks_uri: str) -> AsyncIterator[BareGateway]:
    """A gateway in front of `upstream_url` whose keys come from `jwks_uri` (which may be dead)."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    (directory / "server_allowlist.toml").write_text(
        f'[servers.everything]\nurl = "{upstream_url}"\ndefault_scopes = ["tools:call"]\n'
    )
    (directory / "gateway.toml").write_text(
        f'public_url = "http://127.0.0.1:{port}"\nport = {port}\nallowlist = "server_allowlist.toml"\n\n'
        f'[auth]\nissuer = "{issuer}"\njwks_uri = "{jwks_uri}"\nalgorithms = ["ES256"]\n'
        "jwks_fetch_timeout_seconds = 1\n\n"
        '[audit]\ndatabase = "audit.db"\n'
    )
    audit = MemoryAuditSink()
    app = create_app(load_config(directory / "gateway.toml"), audit=audit, secrets={})
    async with _serve_on(app, sock, http="httptools"):
        yield BareGateway(app, f"http://127.0.0.1:{port}", audit)


def modern_call_body(tool: str, arguments: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    """A 2026-07-28 tools/call, with the per-request envelope that era requires in `params._meta`."""
    return call_body(tool, arguments, request_id, _meta=dict(MODERN_META))


def spellings_of_the_same_bytes(canonical: str) -> dict[str, str]:
    """Strings a lenient base64url decoder turns into the same bytes as `canonical`, by kind.

    For SECURITY.md "Identifiers the gateway issues have one accepted spelling": each must be refused.
    """
    raw = base64.urlsafe_b64decode(canonical + "=" * (-len(canonical) % 4))
    variants = {
        "padded": base64.urlsafe_b64encode(raw).decode(),
        "extra-padding": canonical + "==",
        "standard-alphabet": base64.b64encode(raw).rstrip(b"=").decode(),
        "space-inside": canonical[:8] + " " + canonical[8:],
        "newline-inside": canonical[:8] + "\n" + canonical[8:],
        "tab-at-the-end": canonical + "\t",
        "non-ascii": canonical[:8] + "\u00e9" + canonical[8:],
        "fullwidth-letter": canonical[:-1] + chr(0xFF21),
    }
    unused_bits = {1: 4, 2: 2}.get(len(raw) % 3, 0)  # low bits of the last character that carry nothing
    if unused_bits:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(canonical[-1])
        variants["other-trailing-bits"] = canonical[:-1] + alphabet[last | ((1 << unused_bits) - 1)]
    return {kind: variant for kind, variant in variants.items() if variant != canonical}
