"""Encoding of the request head sent upstream, with the checks that keep it from being smuggled."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NoReturn

# RFC 9110 §9.1 / §5.6.2: method = token; tchar is this set.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: a field value is field-vchar / obs-text / SP / HTAB; every other CTL (CR, LF and NUL included)
# could end the line early and start a header or a request of the sender's choosing.
_INVALID_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ], spelled with RFC 3986 pchar / query characters
# only, so no SP, CTL or non-ASCII byte can split the request line.
_ORIGIN_FORM = re.compile(r"/[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*")
# The pool alone frames the message and decides on persistence; a caller's copy of these would give the upstream
# two opinions (RFC 9112 §6.3 items 3 and 5, §9.6).
_FRAMING_FIELDS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


def check_path(path: str) -> None:
    """Refuse a request target that is not a plain origin-form path and query."""
    if _ORIGIN_FORM.fullmatch(path) is None:
        raise ValueError(f"request target must be origin-form (RFC 9112 §3.2.1): {path!r}")


def encode_request_line(method: str, path: str, host_field: bytes) -> bytes:
    """`METHOD path HTTP/1.1` plus the Host field line: the part of a request that depends on the route only."""
    if _TOKEN.fullmatch(method.encode("latin-1", "replace")) is None:
        raise ValueError(f"HTTP method must be a token (RFC 9110 §9.1): {method!r}")
    if method == "CONNECT":
        # A 2xx to CONNECT turns the connection into a tunnel (RFC 9110 §9.3.6); this pool only exchanges messages.
        raise ValueError("CONNECT is not supported upstream")
    check_path(path)
    return f"{method} {path} HTTP/1.1\r\n".encode("ascii") + host_field


def encode_request(request_line: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The whole request as one buffer, after checking every caller-supplied field line."""
    parts = [request_line]
    append = parts.append
    values = []
    names_ok = True
    for name, value in headers:
        if name not in _VALID_NAMES and not _valid_name(name):
            names_ok = False
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
        values.append(value)
    # The value check is a character class, so one search over every value finds a bad byte in any of them.
    if not names_ok or _INVALID_VALUE.search(b"".join(values)) is not None:
        _refuse_first(headers)
    # RFC 9112 §6.2: always a Content-Length, never chunked: the body is in memory and the length is known.
    append(b"content-length: %d\r\n\r\n" % len(body))
    if body:
        append(body)
    return b"".join(parts)


def _refuse_first(headers: Sequence[tuple[bytes, bytes]]) -> NoReturn:
    """Raise for the first bad field line, checking line by line in order (names before their values)."""
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"header name is not a token (RFC 9110 §5.1): {name!r}")
        if name.lower() in _FRAMING_FIELDS:
            raise ValueError(f"header {name!r} is set by the upstream pool, not the caller")
        if _INVALID_VALUE.search(value) is not None:
            raise ValueError(f"header {name!r} has a control character in its value (RFC 9110 §5.5)")
    raise AssertionError("a field line was refused but none is at fault")


# Field names known to pass the name checks: a route relays a handful. Bounded, since the names of
# Mcp-Param-* headers are the client's.
_VALID_NAMES: set[bytes] = set()
_VALID_NAMES_MAX = 256


def _valid_name(name: bytes) -> bool:
    if _TOKEN.fullmatch(name) is None or name.lower() in _FRAMING_FIELDS:
        return False
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(name)
    return True
