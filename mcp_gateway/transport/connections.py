"""Connection hygiene at the front door: a request-head deadline, idle connections closed, a per-process cap.

uvicorn's httptools protocol arms no timer when a connection opens, and its keep-alive timer is cancelled
by the first byte that arrives after a response and is not armed again until the next response: a client
that connects and sends nothing, or that trickles a request head a byte at a time (slow loris), holds its
connection, and one file descriptor, forever. Its `limit_concurrency` answers requests with 503 once too
many connections are open, but it never refuses the connections themselves. `GuardedHttpToolsProtocol`
closes both gaps while a connection waits for a request head:

- a connection that begins no request within `idle_timeout` of the start of its wait (never used, or
  between keep-alive requests) is closed without an answer (RFC 9112 §9.8: a server may close an idle
  connection);
- a request head must be complete within `header_timeout` of the moment the connection started waiting
  for it (opened, or finished its previous response), however its bytes trickle in; past that the
  connection gets a 408 and is closed;
- past `max_connections` open connections in this process, a new connection is answered with a 503 and
  `Retry-After`, and closed.

The hot path is a few attribute writes per request and no timer at all: one sweeper per process looks at
the waiting connections a few times a second (uvicorn armed and cancelled a timer for every request).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

RETRY_AFTER_SECONDS = 1
_LINGER_SECONDS = 2.0  # a refused client gets this long to read the 503 before its connection is closed
_MIN_TICK, _MAX_TICK = 0.05, 1.0  # how often the sweeper looks: a quarter of the shortest wait, within these


def _answer(status: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [
        b"HTTP/1.1 " + status,
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"cache-control: no-store",
        *extra,
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


OVER_CAPACITY = _answer(
    b"503 Service Unavailable",
    b'{"error":"Too many open connections to this gateway process; retry later"}',
    b"retry-after: " + str(RETRY_AFTER_SECONDS).encode(),
)
HEADER_TIMEOUT = _answer(b"408 Request Timeout", b'{"error":"The request head did not arrive in time"}')


@dataclass(frozen=True)
class ConnectionLimits:
    """What a connection may do at the front door, from gateway.toml."""

    header_timeout: float  # a request head completes within this many seconds of the wait's start
    idle_timeout: float  # a waiting connection that begins no request for this long is closed
    max_connections: int  # open connections per process; more are answered 503 and closed

    @property
    def first_wait(self) -> float:
        return min(self.header_timeout, self.idle_timeout)


@dataclass
class ConnectionCounts:
    """This process's connection counters, read by `ConnectionCollector` at scrape time."""

    open: int = 0
    accepted: int = 0
    refused: int = 0
    lingering: int = 0  # refused connections still draining before their close
    header_timeouts: int = 0
    idle_closed: int = 0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline, an idle deadline and a connection cap.

    Bind `limits`, `counts` and a sweeper with `guarded_protocol(...)`; uvicorn builds one instance per
    connection.
    """

    limits: ClassVar[ConnectionLimits]
    counts: ClassVar[ConnectionCounts]
    sweeper: ClassVar[_Sweeper]

    _waiting_since: float | None = None  # when the wait for a request head began; None while one is served
    _head_pending: bool = False  # the parser has begun a request whose head is not complete yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        counts = self.counts
        if counts.open >= self.limits.max_connections:
            counts.refused += 1
            refusal = _Refusal(counts, self.limits.max_connections)
            transport.set_protocol(refusal)
            refusal.connection_made(transport)
            return
        counts.open += 1
        counts.accepted += 1
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        self.sweeper.watch(self.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts.open -= 1
        self._waiting_since = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._head_pending = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._waiting_since = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle.response_complete and self._waiting_since is None and not self._head_pending:
            self._waiting_since = self.loop.time()  # the app answered before the body ended; the wait starts now

    def on_response_complete(self) -> None:
        # uvicorn's own, with the sweeper's deadlines in place of its keep-alive timer (which any byte
        # cancelled for good).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self.cycle.more_body:  # else the request's body is still arriving: on_message_complete
            self._waiting_since = self.loop.time()

    def _close_if_overdue(self, now: float) -> None:
        since = self._waiting_since
        if since is None or self.transport.is_closing():
            return
        if self._head_pending:
            if now - since < self.limits.header_timeout:
                return
            self.counts.header_timeouts += 1
            self.transport.write(HEADER_TIMEOUT)
        else:
            if now - since < self.limits.first_wait:
                return
            self.counts.idle_closed += 1
        self._waiting_since = None
        self.transport.close()


class _Sweeper:
    """One timer per process, not one per connection or request: every `tick` it closes the connections
    whose wait for a request head is over. A deadline is kept at most one tick late."""

    def __init__(self, limits: ConnectionLimits, counts: ConnectionCounts) -> None:
        self.tick = min(max(limits.first_wait / 4, _MIN_TICK), _MAX_TICK)
        self.counts = counts
        self.connections: set[Any] = set()
        self.handle: asyncio.TimerHandle | None = None

    def watch(self, connections: set[Any]) -> None:
        if self.handle is None:
            self.connections = connections  # uvicorn's set of this server's open connections
            self.handle = asyncio.get_running_loop().call_later(self.tick, self.sweep)

    def sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in tuple(self.connections):  # a close takes effect later; the copy is for safety
            if isinstance(connection, GuardedHttpToolsProtocol):
                connection._close_if_overdue(now)
        self.handle = loop.call_later(self.tick, self.sweep) if self.counts.open else None


class _Refusal(asyncio.Protocol):
    """A connection past the cap: answered 503 at once, then drained until the client closes or briefly.

    Draining before the close keeps the answer readable: closing a socket with unread request bytes makes
    the kernel send a reset, which can destroy the 503 before the client reads it.
    """

    def __init__(self, counts: ConnectionCounts, max_lingering: int) -> None:
        self.counts = counts
        self.max_lingering = max_lingering
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(OVER_CAPACITY)
        if self.counts.lingering >= self.max_lingering or not transport.can_write_eof():
            transport.close()  # a flood of refusals is not given a second pool of descriptors
            return
        self.transport = transport
        self.counts.lingering += 1
        transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: it has been answered

    def eof_received(self) -> bool:
        return False  # the client has read the answer and closed its side: close ours

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.counts.lingering -= 1
            self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def guarded_protocol(limits: ConnectionLimits, counts: ConnectionCounts) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to pass to uvicorn as `http=`, bound to one server's limits and counters."""
    namespace = {"limits": limits, "counts": counts, "sweeper": _Sweeper(limits, counts)}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), namespace)


class ConnectionCollector(Collector):
    """Open connections, the cap, and why connections were refused or closed, read at scrape time."""

    def __init__(self, counts: ConnectionCounts, limits: ConnectionLimits) -> None:
        self.counts = counts
        self.limits = limits

    def collect(self) -> list[Metric]:
        counts = self.counts
        open_now = GaugeMetricFamily("mcp_gateway_connections_open", "Client connections open in this process")
        open_now.add_metric([], float(counts.open))
        cap = GaugeMetricFamily("mcp_gateway_connections_max", "Open client connections allowed per process")
        cap.add_metric([], float(self.limits.max_connections))
        accepted = CounterMetricFamily("mcp_gateway_connections_accepted", "Client connections accepted")
        accepted.add_metric([], float(counts.accepted))
        refused = CounterMetricFamily(
            "mcp_gateway_connections_refused", "Client connections answered 503 because the cap was reached"
        )
        refused.add_metric([], float(counts.refused))
        closed = CounterMetricFamily(
            "mcp_gateway_connections_closed",
            "Client connections closed by the gateway while waiting for a request head",
            labels=["reason"],
        )
        closed.add_metric(["header_timeout"], float(counts.header_timeouts))
        closed.add_metric(["idle"], float(counts.idle_closed))
        return [open_now, cap, accepted, refused, closed]
