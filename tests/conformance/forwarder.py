"""A loopback TCP forwarder that adds ``Authorization: Bearer <token>`` to every HTTP request it relays.

The conformance suite cannot send an Authorization header, and the gateway requires one. Put this in front:

    async with bearer_forwarder("http://127.0.0.1:8000/github/mcp", token) as url:
        ...  # url is "http://127.0.0.1:<free port>/github/mcp"; point the suite at it

It works on bytes, not on a parsed HTTP model: only the request head is rewritten (the token added, any
``Authorization`` the client sent dropped, ``Connection: close`` forced so that every request gets a fresh
connection and so a head of its own), and everything after it, both ways, is relayed as it arrives. So SSE
streams are not buffered, a client that disconnects disconnects upstream too, and odd header values (a forged
``Host``, a value with trailing whitespace) reach the target exactly as the client sent them. The only other
change: a ``Host`` or ``Origin`` that names the forwarder itself is rewritten to name the target, so honest
requests look to the target as if they were sent to it directly.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

MAX_HEAD_BYTES = 64 * 1024
_HOP_BY_HOP = {b"authorization", b"connection", b"keep-alive", b"proxy-connection"}


def rewrite_request_head(head: bytes, *, token: str, own_authority: str, target_authority: str) -> bytes:
    """Return the request head (request line and fields, without the blank line) as it goes to the target."""
    request_line, *fields = head.split(b"\r\n")
    own, target = own_authority.encode(), target_authority.encode()
    out = [request_line]
    for field in fields:
        name, _, value = field.partition(b":")
        lowered = name.strip().lower()
        if lowered in _HOP_BY_HOP:
            continue
        if lowered == b"host" and value.strip() == own:
            field = b"Host: " + target
        elif lowered == b"origin" and value.strip() in (b"http://" + own, b"https://" + own):
            field = b"Origin: " + value.strip().split(b"://")[0] + b"://" + target
        out.append(field)
    out.append(b"Authorization: Bearer " + token.encode())
    out.append(b"Connection: close")
    return b"\r\n".join(out)


async def _read_head(stream: anyio.abc.ByteStream) -> tuple[bytes, bytes] | None:
    """Read up to the end of the request head; return (head, bytes read past it), or None if there is none."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD_BYTES:
            return None
        try:
            buffer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


async def _pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()  # the client finished sending: tell the target, but keep reading its response
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, NotImplementedError):
        pass


@asynccontextmanager
async def bearer_forwarder(
    target_url: str,
    token: str,
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[str]:
    """Listen on ``host`` at a free port, relay to ``target_url``'s server; yield the URL to use instead.

    The yielded URL has the target's path and query. An ``https`` target is reached over TLS with
    ``ssl_context`` (default: the system's trust store); clients always talk plain HTTP to the forwarder.
    """
    target = urlsplit(target_url)
    if target.scheme not in ("http", "https") or target.hostname is None:
        raise ValueError(f"target URL must be http(s)://host[:port]/path, got {target_url!r}")
    tls = target.scheme == "https"
    target_host, target_port = target.hostname, target.port or (443 if tls else 80)

    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    own_authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def relay(client: anyio.abc.SocketStream) -> None:
        async with client:
            received = await _read_head(client)
            if received is None:
                return
            head, rest = received
            new_head = rewrite_request_head(
                head, token=token, own_authority=own_authority, target_authority=target.netloc
            )
            try:
                upstream: anyio.abc.ByteStream = await (
                    anyio.connect_tcp(target_host, target_port, ssl_context=ssl_context, tls_hostname=target_host)
                    if tls
                    else anyio.connect_tcp(target_host, target_port)
                )
            except OSError:
                await client.send(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            async with upstream, anyio.create_task_group() as tg:
                await upstream.send(new_head + b"\r\n\r\n" + rest)
                tg.start_soon(_pump, client, upstream)
                # The target closes the connection after its response (Connection: close), and that ends the relay.
                await _pump(upstream, client)
                tg.cancel_scope.cancel()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, relay)
        try:
            yield urlunsplit(("http", own_authority, target.path, target.query, ""))
        finally:
            tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Relay loopback HTTP to TARGET, adding a bearer token.")
    parser.add_argument("target", help="the URL to forward to, e.g. http://127.0.0.1:8000/github/mcp")
    parser.add_argument("--token", required=True, help="the bearer token to add")
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with bearer_forwarder(args.target, args.token) as url:
            print(url, flush=True)
            await anyio.sleep_forever()

    anyio.run(serve)


if __name__ == "__main__":
    main()
