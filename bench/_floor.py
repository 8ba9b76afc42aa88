"""The floor: what serving one call costs in Python on uvicorn, with no gateway work at all.

    python bench/_floor.py asgi --port P                       # uvicorn + a bare ASGI app, fixed JSON body
    python bench/_floor.py relay --port P --upstream-port U    # a bare asyncio TCP relay to the upstream

`asgi` serves the way the gateway does (uvicorn, uvloop, httptools, no access log, no server header) an
app that reads the request body and answers a fixed JSON body: the cost of uvicorn's HTTP/1.1 and ASGI
layers per call, which every ASGI gateway pays on its client side. It answers the handshake era's
`initialize` (with an `Mcp-Session-Id`), notifications (202) and `DELETE` too, so the load generator runs
against it unchanged.

`relay` accepts connections and pipes bytes both ways to the upstream, one upstream connection per client
connection, on uvloop with bare asyncio protocols: no HTTP parsing at all. Its CPU per call is the socket
work of relaying (two reads, two writes and their wake-ups), the least any proxy pays to reach the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

_ECHO_TEXT = "bench-echo-0123456789"  # _load.ECHO_TEXT: the generator checks that it comes back
_RESULT = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": _ECHO_TEXT}], "isError": False}},
    separators=(",", ":"),
).encode()
_INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "result": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "floor", "version": "0"},
        },
    },
    separators=(",", ":"),
).encode()
_JSON_HEADERS = [(b"content-type", b"application/json")]


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, headers, answer = 200, _JSON_HEADERS, _RESULT
    if scope["method"] == "DELETE":
        headers, answer = [], b""
    elif b'"method":"initialize"' in body:
        headers, answer = [*_JSON_HEADERS, (b"mcp-session-id", b"floor-session")], _INIT
    elif b'"method":"notifications/' in body:
        status, headers, answer = 202, [], b""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def serve_asgi(port: int) -> None:
    import uvicorn

    uvicorn.run(
        floor_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


class _Pipe(asyncio.Protocol):
    """One direction's sink: what arrives on this side is written to `peer`'s transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)  # the upstream connection is not open yet

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Pipe):
    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Pipe, "127.0.0.1", self.upstream_port)
        except OSError:
            assert self.transport is not None
            self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        for data in self.pending:
            assert upstream.transport is not None
            upstream.transport.write(data)
        self.pending.clear()
        assert self.transport is not None
        self.transport.resume_reading()


def serve_relay(port: int, upstream_port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Client(upstream_port), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=("asgi", "relay"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, default=None)
    args = parser.parse_args()
    if args.kind == "asgi":
        serve_asgi(args.port)
    else:
        if args.upstream_port is None:
            parser.error("relay needs --upstream-port")
        serve_relay(args.port, args.upstream_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
