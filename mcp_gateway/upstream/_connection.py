"""One keep-alive HTTP/1.1 connection to the upstream: llhttp parsing and the response-framing checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NoReturn, cast

import httptools

from mcp_gateway.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError

# Buffered-but-unread body bytes above which the socket stops being read, so a slow consumer of a stream
# applies TCP back-pressure to the upstream instead of growing our memory.
_PAUSE_READING_AT = 256 * 1024


# Timers fire to the loop's clock resolution (uvloop: a millisecond), so a wait this close to its deadline
# when the timer fires has timed out; re-arming for the rest would spin.
_TIMER_SLACK = 0.001


class _StopParsing(Exception):
    """Raised inside an llhttp callback to abort `feed_data`; the reason, if any, is in `Connection._refusal`."""


class Connection(asyncio.Protocol):
    """A transport plus the state of the one exchange in flight on it; the pool owns its life cycle.

    Bytes are parsed as they arrive (`data_received`), so the connection always knows whether the peer has
    said something it should not have: bytes while idle, bytes after the response, EOF. A connection is
    reusable only if its last response was complete, keep-alive and spotless.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_header_bytes: int) -> None:
        self._loop = loop
        self._max_header_bytes = max_header_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport  # set by connection_made, before create_connection returns
        self._waiter: asyncio.Future[bool] | None = None
        # One timer outlives many waits: it is armed when a wait needs it and none is pending, and checks on
        # firing whether the wait in progress (if any) has reached its own deadline, re-arming if not. A
        # request then costs one timer, not one per wait (an SSE stream waits once per chunk).
        self._timer: asyncio.TimerHandle | None = None
        self._wait_deadline = 0.0
        self._lost: asyncio.Future[None] = loop.create_future()
        self._paused = False
        self.closed = False
        # Set by the pool while the connection is parked, so a close by the peer frees the slot at once.
        self.on_idle_lost: Callable[[Connection], None] | None = None
        self._begin(active=False, head_only=False)

    def _begin(self, *, active: bool, head_only: bool) -> None:
        self._active = active  # a request is outstanding and its response is not complete
        self._head_only = head_only
        self._interim = False
        self._refusal: UpstreamProtocolError | None = None
        self._received = 0
        self._head_fed = 0
        self._head_bytes = 0
        self._body_total = 0
        self._framing_overhead = 0
        self._transfer_encoding: bytes | None = None
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.error: UpstreamError | None = None

    # -- used by the pool -------------------------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return (
            self.keep_alive
            and self.complete
            and self.error is None
            and not self.closed
            and not self._transport.is_closing()
        )

    def send(self, data: bytes, *, head_only: bool) -> bool:
        """Start an exchange: reset the response state and write the whole request at once.

        False if the connection turned out to be closing, in which case not one byte was written.
        """
        self._begin(active=True, head_only=head_only)
        transport = self._transport
        if self.closed or transport.is_closing():
            self._active = False
            self.error = UpstreamConnectError("upstream closed the connection before the request was sent")
            return False
        if self._paused:  # the previous response was complete but its body was never taken
            self._paused = False
            transport.resume_reading()
        transport.write(data)
        return True

    async def wait(self, timeout: float) -> bool:
        """Wait until the peer sends bytes, closes, or breaks a rule; False if `timeout` seconds pass first."""
        loop = self._loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        deadline = self._wait_deadline = loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no wait in progress: the next one arms a timer again
        deadline = self._wait_deadline
        if self._loop.time() < deadline - _TIMER_SLACK:
            # Armed by an earlier wait; the one in progress started later and has time left.
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        waiter.set_result(False)

    def take_chunks(self) -> list[bytes]:
        """Hand over the body bytes parsed so far, and resume reading if back-pressure had paused it."""
        chunks = self.chunks
        self.chunks = []
        self.buffered = 0
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        return chunks

    def abort(self) -> None:
        """Drop the connection now, without flushing: whatever was in flight is abandoned."""
        self.closed = True
        self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    # -- asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._active:
            # RFC 9112 §11.2: we never pipeline, so bytes with no request outstanding (or after the response)
            # are a spliced or desynchronised response, and nothing later on this connection can be trusted.
            self._fail(UpstreamProtocolError("upstream sent bytes with no request outstanding"))
            return
        self._received += len(data)
        body_before = self._body_total
        head_was_done = self.head_done
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._refusal is not None:
                self._fail(self._refusal)
            elif self._head_only and self.head_done:
                self.keep_alive = False  # the parser stopped on purpose after a HEAD response; see below
            else:
                error = UpstreamProtocolError(f"malformed upstream response: {exc}")
                error.__cause__ = exc
                self._fail(error)
            self._wake()
            return
        if not self.head_done:
            # Every byte fed so far belongs to the head; llhttp keeps a partial field line in memory, so this is
            # also what bounds memory against an endless header line.
            self._head_fed += len(data)
            if self._head_fed > self._max_header_bytes:
                self._fail(UpstreamProtocolError("upstream response head exceeds max_header_bytes"))
        elif head_was_done:
            # Chunk framing, extensions and trailers carry no body; an endless run of them is refused the same way
            # an endless head is.
            if self._body_total == body_before and not self.complete:
                self._framing_overhead += len(data)
                if self._framing_overhead > self._max_header_bytes:
                    self._fail(UpstreamProtocolError("upstream chunk framing exceeds max_header_bytes"))
            else:
                self._framing_overhead = 0
        if self.buffered > _PAUSE_READING_AT and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # let the transport close itself; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._active and self.error is None:
            error: UpstreamError
            if self._received == 0:
                error = UpstreamConnectError("upstream closed the connection before responding")
            else:
                # RFC 9112 §8: a message whose framing says there is more is incomplete, never "short".
                error = UpstreamProtocolError("upstream closed the connection mid-response")
            error.__cause__ = exc
            self.error = error
        self._wake()
        self._lost.set_result(None)  # asyncio calls connection_lost exactly once
        callback = self.on_idle_lost
        if callback is not None:
            self.on_idle_lost = None
            callback(self)

    # -- llhttp callbacks (httptools) -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # RFC 9112 §11.2: bytes after a complete response in the same read are a second, unsolicited one.
            self._refuse("upstream sent bytes after the end of the response")
        self._interim = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # trailer fields (RFC 9112 §7.1.2) do not affect framing and are not forwarded
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_header_bytes:
            self._refuse("upstream response head exceeds max_header_bytes")
        name = name.lower()
        if name == b"content-length":
            # llhttp has already refused non-digits, lists and repeated fields (RFC 9112 §6.3 item 5).
            self.content_length = int(value)
        elif name == b"transfer-encoding":
            if self._transfer_encoding is not None:
                # RFC 9112 §6.1: chunked MUST NOT be applied more than once, and no other coding was negotiated.
                self._refuse("upstream response repeats Transfer-Encoding")
            self._transfer_encoding = value
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser.get_http_version() != "1.1":
            # HTTP/1.0 means close-delimited bodies and no chunked coding; the upstream leg speaks 1.1 only.
            self._refuse("upstream did not answer with HTTP/1.1")
        status = parser.get_status_code()
        if status < 100 or status > 599:
            self._refuse("upstream status code is out of range (RFC 9110 §15)")
        if status < 200:
            if status == 101:
                # RFC 9110 §15.2.2: only an answer to Upgrade, which is never sent.
                self._refuse("upstream switched protocols unasked")
            # RFC 9110 §15.2: a client MUST parse interim 1xx responses before the final one; they are dropped.
            self._interim = True
            self.headers = []
            self.content_length = None
            self._transfer_encoding = None
            return
        # RFC 9112 §6.3 item 3: Content-Length with Transfer-Encoding "ought to be handled as an error"; llhttp
        # refuses that combination itself (and a test pins it), so only the coding is left to check here.
        transfer_encoding = self._transfer_encoding
        if transfer_encoding is not None:
            if transfer_encoding.lower() != b"chunked":
                # RFC 9112 §6.3 item 4: chunked not final means close-delimited; §7.4: nothing else was offered.
                self._refuse("upstream Transfer-Encoding is not exactly chunked")
        elif self.content_length is None and status != 204 and status != 304 and not self._head_only:
            # RFC 9112 §6.3 item 8: a close-delimited body cannot be told apart from a truncated one.
            self._refuse("upstream response body is close-delimited")
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        self.head_done = True
        if self._head_only:
            # RFC 9112 §6.3 item 1: a HEAD response ends with its head whatever its fields say. httptools cannot
            # tell llhttp so, so parsing stops here and the connection is not reused.
            self.complete = True
            self._active = False
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        self._body_total += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            return
        self.complete = True
        self._active = False

    # -- helpers ----------------------------------------------------------------------------------------------

    def _refuse(self, reason: str) -> NoReturn:
        self._refusal = UpstreamProtocolError(reason)
        raise _StopParsing

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        self.keep_alive = False
        self.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
