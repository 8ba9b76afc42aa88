"""Pulling the bearer token out of raw ASGI headers (RFC 6750 §2.1), and nothing but that."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mcp_gateway.errors import InvalidRequest, InvalidToken, MissingToken

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_SCHEME = b"bearer"


def bearer_token(headers: Sequence[tuple[bytes, bytes]], *, max_token_bytes: int) -> str:
    """Return the one bearer token in `Authorization`, or raise the RFC 6750 §3.1 error that fits.

    Only the `Authorization` header is consulted; tokens in the query string or cookies are never
    looked at (RFC 6750 §2.3 is forbidden by the MCP authorization spec, §2.2 form bodies are not
    MCP). Messages are generic and never contain the token.
    """
    return checked_token(bearer_credential(headers, max_token_bytes=max_token_bytes))


def bearer_credential(headers: Sequence[tuple[bytes, bytes]], *, max_token_bytes: int) -> bytes:
    """The raw bytes of the one bearer token in `Authorization`, every check of `bearer_token` but its syntax.

    The syntax check (`checked_token`) is the last one `bearer_token` makes, so a caller that already
    knows these exact bytes passed it (a verified-token cache keyed by their hash) may skip it and
    still refuse exactly what `bearer_token` refuses, with the same error.
    """
    value: bytes | None = None
    for name, field in headers:
        if name == b"authorization":
            if value is not None:
                # RFC 6750 §3.1 invalid_request: "uses more than one method for including an access token".
                raise InvalidRequest("more than one Authorization header")
            value = field
    if value is None:
        # RFC 6750 §3.1: a request without authentication information gets no error code.
        raise MissingToken("authentication required")
    value = value.strip(b" \t")  # RFC 9110 §5.5: surrounding whitespace is not part of the value
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() != _SCHEME:
        # RFC 6750 §3.1: a client that "attempted using an unsupported authentication method" is
        # answered like one that sent nothing: 401 with the Bearer challenge, no error code, so it
        # can discover how to obtain a token. (RFC 9110 §11.1: the scheme is case-insensitive.)
        raise MissingToken("authentication required")
    token = rest.lstrip(b" ")  # RFC 6750 §2.1: "Bearer" 1*SP b64token
    if len(token) > max_token_bytes:
        # Checked before any parsing or cryptography: oversized input never reaches a decoder.
        raise InvalidToken("the access token is too large")
    if not token:
        raise InvalidRequest("the Authorization header has no bearer token")
    return token


def checked_token(token: bytes) -> str:
    """`token` as text if it follows the RFC 6750 §2.1 b64token syntax, else InvalidRequest."""
    if _B64TOKEN.fullmatch(token) is None:
        # RFC 6750 §3.1 invalid_request: the header does not follow the §2.1 syntax; it is the
        # request that is malformed, so this is 400 rather than a verdict on a token.
        raise InvalidRequest("the Authorization header is not a valid bearer credential")
    return token.decode("ascii")
