"""The incremental SSE parser: line endings split anywhere, size caps, half events, and framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.errors import UpstreamProtocolError
from mcp_gateway.proxy.sse import KEEP_ALIVE, SSEEvent, SSEParser, frame

STREAM = (
    b"id: 1\r\nretry: 100\r\ndata: \r\n\r\n"
    b": keep-alive\r\n\r\n"
    b'event: message\r\nid: 2\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    b"data: last\n\n"
)
EXPECTED = [
    SSEEvent(b"", None, b"1", b"100"),
    SSEEvent(None, None, None, None),
    SSEEvent(b'{"a":\n1}', b"message", b"2", None),
    SSEEvent(b"last", None, None, None),
]


def _feed_all(parser: SSEParser, chunks: list[bytes]) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    parser.close()
    return events


def test_whole_stream_parses_into_its_events() -> None:
    assert _feed_all(SSEParser(1024), [STREAM]) == EXPECTED


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    parser = SSEParser(1024)
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == [SSEEvent(b"x", None, None, None)]  # CRLF, then CR: a blank line
    assert parser.feed(b"\n") == []  # completes that CR's CRLF: no second blank line
    assert parser.feed(b"data: y\n\n") == [SSEEvent(b"y", None, None, None)]


def test_cr_alone_ends_a_line() -> None:
    assert SSEParser(1024).feed(b"data: x\r\rdata: y\r\r") == [
        SSEEvent(b"x", None, None, None),
        SSEEvent(b"y", None, None, None),
    ]


def test_cr_then_crlf_is_two_line_endings() -> None:
    parser = SSEParser(1024)
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\r\n") == [SSEEvent(b"x", None, None, None)]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert _feed_all(SSEParser(1024), chunks) == EXPECTED


def test_byte_by_byte_feeding_gives_the_same_events() -> None:
    assert _feed_all(SSEParser(1024), [STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_leading_byte_order_mark_is_ignored() -> None:
    assert SSEParser(1024).feed(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent(b"x", None, None, None)]


def test_event_larger_than_the_cap_is_a_protocol_error() -> None:
    parser = SSEParser(64)
    parser.feed(b"data: " + b"x" * 50)
    with pytest.raises(UpstreamProtocolError, match="exceeds 64 bytes"):
        parser.feed(b"x" * 50)


def test_events_under_the_cap_never_accumulate_past_it() -> None:
    parser = SSEParser(64)
    for _ in range(100):
        assert parser.feed(b"data: " + b"x" * 40 + b"\n\n") == [SSEEvent(b"x" * 40, None, None, None)]


def test_stream_ending_in_half_an_event_is_a_protocol_error() -> None:
    parser = SSEParser(1024)
    parser.feed(b'data: {"jsonrpc":')
    with pytest.raises(UpstreamProtocolError, match="middle of an event"):
        parser.close()


def test_stream_ending_after_a_blank_line_is_complete() -> None:
    parser = SSEParser(1024)
    parser.feed(b"data: x\n\n\n")
    parser.close()


def test_unknown_fields_comments_and_bad_values_are_dropped() -> None:
    events = SSEParser(1024).feed(b"x-secret: 1\n: comment\nretry: soon\nid: a\x01b\ndata: y\n\n")
    assert events == [SSEEvent(b"y", None, None, None)]


def test_field_without_colon_has_an_empty_value() -> None:
    assert SSEParser(1024).feed(b"data\n\n") == [SSEEvent(b"", None, None, None)]


def test_frame_writes_event_id_retry_and_data_lines() -> None:
    assert frame(b'{"a":1}', event_id=b"7", event=b"message") == b'event: message\nid: 7\ndata: {"a":1}\n\n'
    assert frame(b"a\nb", event=None) == b"data: a\ndata: b\n\n"
    assert frame(b"", event_id=b"1", event=None, retry=b"100") == b"id: 1\nretry: 100\ndata: \n\n"


def test_frame_of_an_event_without_content_is_a_bare_keep_alive() -> None:
    assert frame(None, event=b"message") == KEEP_ALIVE == b":\n\n"


def test_framed_events_parse_back_to_themselves() -> None:
    events = [SSEEvent(b"x\ny", b"message", b"9", None), SSEEvent(b"", None, b"3", b"50")]
    wire = b"".join(frame(e.data, event_id=e.id, event=e.event, retry=e.retry) for e in events)
    assert SSEParser(1024).feed(wire) == events
