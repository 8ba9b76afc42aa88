"""A cheap MCP load generator: raw HTTP/1.1 keep-alive on asyncio protocols, responses parsed by httptools.

One connection per concurrent worker; every request is pre-encoded except its JSON-RPC id (and so its
Content-Length). No MCP SDK, no httpx: the generator must leave the CPU to the processes being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httptools

Era = Literal["2026-07-28", "2025-11-25"]
ECHO_TEXT = "bench-echo-0123456789"
_ECHO_MARK = json.dumps(ECHO_TEXT).encode()
_OK_MARK = b'"isError":false'

# MCP 2026-07-28 basic §Per-request protocol fields: every request carries the envelope in params._meta.
_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway-bench", "version": "0"},
}


@dataclass(frozen=True)
class Target:
    """Where the load goes: `host:port` + `path`, with a bearer token when the target is the gateway."""

    name: str
    host: str
    port: int
    path: str
    token: str | None = None

    def head(self, extra: list[tuple[str, str]]) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
        ]
        if self.token is not None:
            lines.append(f"Authorization: Bearer {self.token}")
        lines += [f"{k}: {v}" for k, v in extra]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class _Template:
    """A POST whose only varying part is the JSON-RPC id: `head` + length + `pre` + id + `post`."""

    __slots__ = ("head", "post", "pre")

    def __init__(self, head: bytes, body: dict[str, Any]) -> None:
        text = json.dumps({**body, "id": 0}, separators=(",", ":")).encode()
        pre, post = text.split(b'"id":0', 1)
        self.head = head
        self.pre = pre + b'"id":'
        self.post = post

    def render(self, request_id: int) -> bytes:
        rid = str(request_id).encode()
        length = len(self.pre) + len(rid) + len(self.post)
        return b"%sContent-Length: %d\r\n\r\n%s%s%s" % (self.head, length, self.pre, rid, self.post)


def echo_template(target: Target, era: Era, session_id: str | None) -> _Template:
    params: dict[str, Any] = {"name": "echo", "arguments": {"message": ECHO_TEXT}}
    if era == "2026-07-28":
        params["_meta"] = _ENVELOPE
        extra = [("MCP-Protocol-Version", era), ("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]
    else:
        assert session_id is not None
        extra = [("MCP-Protocol-Version", era), ("Mcp-Session-Id", session_id)]
    return _Template(target.head(extra), {"jsonrpc": "2.0", "method": "tools/call", "params": params})


def _plain(target: Target, extra: list[tuple[str, str]], body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return target.head(extra) + b"Content-Length: %d\r\n\r\n" % len(payload) + payload


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange(data)` writes a request and waits for the whole response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self.session_id: str | None = None
        self.lost: BaseException | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed by peer"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 14 and name.lower() == b"mcp-session-id":
            self.session_id = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, data: bytes) -> tuple[int, bytes]:
        if self.lost is not None or self._transport is None:
            raise ConnectionError(f"connection unusable: {self.lost!r}")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(target: Target) -> _Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_Connection, target.host, target.port)
    return conn


async def _handshake(conn: _Connection, target: Target) -> str:
    """initialize + notifications/initialized (2025-11-25); returns the session id the target handed out."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcp-gateway-bench", "version": "0"},
        },
    }
    status, body = await conn.exchange(_plain(target, [], init))
    if status != 200 or b'"result"' not in body or conn.session_id is None:
        raise RuntimeError(f"initialize via {target.name} failed: HTTP {status} {body[:300]!r}")
    session = conn.session_id
    extra = [("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Session-Id", session)]
    status, body = await conn.exchange(_plain(target, extra, {"jsonrpc": "2.0", "method": "notifications/initialized"}))
    if status != 202:
        raise RuntimeError(f"notifications/initialized via {target.name} failed: HTTP {status} {body[:300]!r}")
    return session


async def _end_session(conn: _Connection, target: Target, session: str) -> None:
    head = target.head([("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Session-Id", session)])
    data = head.replace(b"POST ", b"DELETE ", 1) + b"Content-Length: 0\r\n\r\n"
    # Best effort: an abandoned session only holds memory in the upstream.
    with contextlib.suppress(TimeoutError, OSError, ConnectionError):
        await asyncio.wait_for(conn.exchange(data), 5)


@dataclass
class ArmResult:
    """What one measured window saw from the client side."""

    target: str
    calls: int = 0  # successful calls completed inside the window
    errors: int = 0  # failed calls (any status, body or connection problem) inside the window
    errors_outside: int = 0  # failures during warm-up or drain
    seconds: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    first_error: str | None = None
    probes: tuple[Any, Any] | None = None  # the caller's probe() at window start and end


async def run_arm(
    target: Target,
    era: Era,
    concurrency: int,
    *,
    warmup: float,
    duration: float,
    probe: Callable[[], Any],
    settle: Callable[[], Awaitable[None]] | None = None,
) -> ArmResult:
    """Open `concurrency` connections (and sessions), warm up, measure for `duration` seconds, close.

    A call counts when its response completes inside the window (throughput), and its latency is the
    time from writing the request to the end of its response. `probe()` is called right at the
    window's start and end (CPU accounting snapshots).
    """
    result = ArmResult(target.name)
    conns = await asyncio.gather(*(_connect(target) for _ in range(concurrency)))
    sessions: list[str | None] = [None] * concurrency
    if era != "2026-07-28":
        sessions = list(await asyncio.gather(*(_handshake(c, target) for c in conns)))
    templates = [echo_template(target, era, s) for s in sessions]
    phase = 0  # 0 warm-up, 1 measuring, 2 draining
    latencies = result.latencies_ns
    perf = time.perf_counter_ns

    def failed(detail: str) -> None:
        if phase == 1:
            result.errors += 1
        else:
            result.errors_outside += 1
        if result.first_error is None:
            result.first_error = detail

    async def worker(index: int) -> None:
        conn = conns[index]
        template = templates[index]
        request_id = 0
        while phase != 2:
            request_id += 1
            data = template.render(request_id)
            started = perf()
            try:
                status, body = await conn.exchange(data)
            except (OSError, ConnectionError, httptools.HttpParserError) as exc:
                failed(f"{target.name}: connection failed: {exc!r}")
                # A new connection (and session) so one failure does not end the worker.
                await asyncio.sleep(0.05)
                try:
                    conn = conns[index] = await _connect(target)
                    if era != "2026-07-28":
                        sessions[index] = await _handshake(conn, target)
                        template = echo_template(target, era, sessions[index])
                except (OSError, RuntimeError, ConnectionError) as again:
                    failed(f"{target.name}: reconnect failed: {again!r}")
                    await asyncio.sleep(0.2)
                continue
            ended = perf()
            if status == 200 and _OK_MARK in body and _ECHO_MARK in body:
                if phase == 1:
                    result.calls += 1
                    latencies.append(ended - started)
            else:
                failed(f"{target.name}: HTTP {status} {body[:300]!r}")

    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        if settle is not None:
            await settle()
        before = probe()
        t0 = time.perf_counter()
        phase = 1
        await asyncio.sleep(duration)
        phase = 2
        t1 = time.perf_counter()
        after = probe()
        result.seconds = t1 - t0
        result.probes = (before, after)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for task in tasks:
            task.cancel()
        if era != "2026-07-28":
            await asyncio.gather(
                *(
                    _end_session(c, target, s)
                    for c, s in zip(conns, sessions, strict=True)
                    if s is not None and c.lost is None
                )
            )
        for conn in conns:
            conn.close()
    return result


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])
