"""An incremental Server-Sent Events parser with an event size cap, for relaying upstream streams."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_gateway.errors import UpstreamProtocolError


@dataclass(slots=True)
class SSEEvent:
    """One event as the WHATWG SSE rules parse it; `raw` is the event re-framed with LF endings."""

    raw: bytes
    data: bytes | None  # None for comment-only events (keep-alive pings)
    event: bytes | None
    id: bytes | None


class SSEParser:
    """Feed bytes as they arrive; get whole events back. Lines may end in CRLF, LF or CR."""

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        buf += chunk
        # Normalise line endings; a CR at the very end may be half of a CRLF split across chunks.
        held = b""
        if buf.endswith(b"\r"):
            held = b"\r"
            del buf[-1:]
        if b"\r" in buf:
            normalised = bytes(buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buf.clear()
            buf += normalised
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = bytes(buf[start:end])
            start = end + 2
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        if start:
            del buf[:start]
        buf += held
        if len(buf) > self._max:
            raise UpstreamProtocolError(f"upstream SSE event exceeds {self._max} bytes")
        return events

    def close(self) -> None:
        """At end of stream: a half event left over is garbage (SECURITY.md: a half SSE event)."""
        if self._buf.strip(b"\r\n"):
            raise UpstreamProtocolError("upstream SSE stream ended in the middle of an event")


def _parse_block(block: bytes) -> SSEEvent | None:
    data_lines: list[bytes] = []
    event = ident = None
    for line in block.split(b"\n"):
        if not line:
            continue
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
            ident = value
        # comments (empty name) and `retry` pass through in `raw`
    if not block.strip(b"\n"):
        return None
    return SSEEvent(block + b"\n\n", b"\n".join(data_lines) if data_lines else None, event, ident)


def frame(data: bytes, *, event_id: bytes | None = None, event: bytes | None = b"message") -> bytes:
    """Frame a JSON message as an SSE event (data must not contain newlines; compact JSON never does)."""
    head = b""
    if event is not None:
        head += b"event: " + event + b"\n"
    if event_id is not None:
        head += b"id: " + event_id + b"\n"
    return head + b"data: " + data + b"\n\n"
