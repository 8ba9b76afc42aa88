"""A deliberately cheap MCP upstream for scale benchmarks: `tools/list` and `tools/call echo`, a few µs each.

    python bench/_cheap_upstream.py --port PORT

2026-07-28 era only (stateless POSTs, no sessions, no SSE): one asyncio protocol per connection, requests
parsed by httptools, answers pre-encoded except for the JSON-RPC id. Whatever the gateway in front of it
costs per call is then most of the CPU a call costs anywhere, so the gateway is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httptools

ECHO_TEXT = "bench-echo-0123456789"  # what bench/_load.py checks for
ECHO_TOOL = {
    "name": "echo",
    "description": "Echo a message back.",
    "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
}
_RESULTS: dict[str, dict[str, Any]] = {
    "tools/call": {"content": [{"type": "text", "text": ECHO_TEXT}], "isError": False},
    "tools/list": {"tools": [ECHO_TOOL]},
}


def _encoded(result: dict[str, Any]) -> tuple[bytes, bytes]:
    """The answer's JSON split around its id: `pre` + json(id) + `post`."""
    text = json.dumps({"jsonrpc": "2.0", "id": "@ID@", "result": result}, separators=(",", ":")).encode()
    pre, post = text.split(b'"@ID@"', 1)
    return pre, post


_ANSWERS = {method: _encoded(result) for method, result in _RESULTS.items()}
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        try:
            message = json.loads(b"".join(self._body))
            pre, post = _ANSWERS[message["method"]]
            rid = json.dumps(message["id"]).encode()
        except (ValueError, KeyError, TypeError):
            # Notifications and anything else: accepted without a body (MCP answers a notification with 202).
            self._transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            return
        body = pre + rid + post
        self._transport.write(_HEAD % len(body) + body)
        if not self._parser.should_keep_alive():
            self._transport.close()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(args.host, args.port))
    except ImportError:
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
