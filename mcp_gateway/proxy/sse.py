"""An incremental Server-Sent Events parser with an event size cap, for relaying upstream streams."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mcp_gateway.errors import UpstreamProtocolError

_BOM = b"\xef\xbb\xbf"
# What a comment-only block (an upstream keep-alive) becomes: the comment text itself is never relayed.
KEEP_ALIVE = b":\n\n"
_UNECHOABLE = re.compile(rb"[^\x20-\x7e]")


@dataclass(slots=True)
class SSEEvent:
    """One event block as the WHATWG SSE rules parse it; only these fields are ever relayed."""

    data: bytes | None  # None when the block has no data line (comments, a bare id or retry)
    event: bytes | None
    id: bytes | None
    retry: bytes | None


class SSEParser:
    """Feed bytes as they arrive; get whole events back. Lines may end in CRLF, LF or CR.

    Each byte is normalised and scanned once, so an event arriving in many small chunks costs time
    linear in its size; `max_event_bytes` bounds what is buffered.
    """

    __slots__ = ("_after_cr", "_buf", "_max", "_scanned", "_started")

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_event_bytes
        self._after_cr = False  # the last chunk ended in CR, which may be the first half of a CRLF
        self._scanned = 0  # the buffer holds no blank line before this offset
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._started and chunk:
            self._started = True
            # WHATWG SSE §9.2.5: one leading U+FEFF is ignored. (A BOM split across chunks is not.)
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if self._after_cr and chunk:
            # The previous chunk ended in CR, already counted as a line end: an LF now completes that CRLF.
            self._after_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if chunk.endswith(b"\r"):
            self._after_cr = True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        buf += chunk
        events: list[SSEEvent] = []
        start = 0
        scan = self._scanned
        while True:
            end = buf.find(b"\n\n", scan)
            if end < 0:
                break
            event = _parse_block(bytes(buf[start:end]))
            if event is not None:
                events.append(event)
            start = scan = end + 2
        if start:
            del buf[:start]
        # The next search starts one byte back: a blank line may straddle this chunk and the next.
        self._scanned = max(len(buf) - 1, 0)
        if len(buf) > self._max:
            raise UpstreamProtocolError(f"upstream SSE event exceeds {self._max} bytes")
        return events

    def close(self) -> None:
        """At end of stream: a half event left over is garbage (SECURITY.md: a half SSE event)."""
        if self._buf.strip(b"\n"):
            raise UpstreamProtocolError("upstream SSE stream ended in the middle of an event")


def _parse_block(block: bytes) -> SSEEvent | None:
    data_lines: list[bytes] = []
    event = ident = retry = None
    seen = False
    for line in block.split(b"\n"):
        if not line:
            continue
        seen = True
        name, sep, value = line.partition(b":")
        if not sep:
            value = b""
        elif value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value
        elif name == b"id":
            # WHATWG: an id containing NUL is ignored. We also drop ids a client could not echo back
            # in a Last-Event-ID header (control characters).
            if _UNECHOABLE.search(value) is None:
                ident = value
        elif name == b"retry" and value.isdigit():
            retry = value
        # comments (empty name) and unknown fields are dropped
    if not seen:
        return None
    return SSEEvent(b"\n".join(data_lines) if data_lines else None, event, ident, retry)


def frame(
    data: bytes | None, *, event_id: bytes | None = None, event: bytes | None = b"message", retry: bytes | None = None
) -> bytes:
    """Frame one event for the client; multi-line data becomes several `data:` lines."""
    if data is None and event_id is None and retry is None:
        return KEEP_ALIVE
    out = b""
    if event is not None and data is not None:
        out += b"event: " + event + b"\n"
    if event_id is not None:
        out += b"id: " + event_id + b"\n"
    if retry is not None:
        out += b"retry: " + retry + b"\n"
    if data is not None:
        if b"\n" in data:
            data = data.replace(b"\n", b"\ndata: ")
        out += b"data: " + data + b"\n"
    return out + b"\n"
