from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.auth.bearer import bearer_token
from mcp_gateway.errors import AuthError, InvalidRequest, InvalidToken, MissingToken

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
MAX = 8192


def test_the_token_is_returned_from_a_single_bearer_header() -> None:
    assert bearer_token([(b"authorization", f"Bearer {TOKEN}".encode())], max_token_bytes=MAX) == TOKEN


@pytest.mark.parametrize(
    "value",
    [f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}", f"Bearer {TOKEN}  ", "Bearer abc+/~_-.==", "Bearer a"],
    ids=["lowercase-scheme", "uppercase-scheme", "several-spaces", "trailing-space", "all-b64token-chars", "short"],
)
def test_rfc6750_syntax_variants_are_accepted(value: str) -> None:
    assert bearer_token([(b"authorization", value.encode())], max_token_bytes=MAX) == value.split()[1]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([], MissingToken),
        ([(b"cookie", f"access_token={TOKEN}".encode())], MissingToken),
        ([(b"x-access-token", TOKEN.encode())], MissingToken),
        ([(b"authorization", b"Basic YWxpY2U6c2VjcmV0")], MissingToken),
        ([(b"authorization", f"Token {TOKEN}".encode())], MissingToken),
        ([(b"authorization", f"Bearer{TOKEN}".encode())], MissingToken),
        ([(b"authorization", b"Bearer")], InvalidRequest),
        ([(b"authorization", b"Bearer    ")], InvalidRequest),
        ([(b"authorization", b"")], MissingToken),
        ([(b"authorization", f"Bearer {TOKEN}".encode())] * 2, InvalidRequest),
        ([(b"authorization", f"Bearer {TOKEN}".encode()), (b"authorization", b"Basic eA==")], InvalidRequest),
        ([(b"authorization", f"Bearer {TOKEN} extra".encode())], InvalidRequest),
        ([(b"authorization", f"Bearer {TOKEN}, Bearer {TOKEN}".encode())], InvalidRequest),
        ([(b"authorization", b"Bearer abc=def")], InvalidRequest),
        ([(b"authorization", b"Bearer ab\tcd")], InvalidRequest),
        ([(b"authorization", b"Bearer \xe2\x82\xac")], InvalidRequest),
        ([(b"authorization", b"Bearer a\x00b")], InvalidRequest),
        ([(b"authorization", b"Bearer " + b"a" * (MAX + 1))], InvalidToken),
    ],
    ids=[
        "no-authorization",
        "token-in-cookie-is-ignored",
        "token-in-other-header-is-ignored",
        "basic-scheme",
        "unknown-scheme",
        "no-space-after-scheme",
        "bearer-with-nothing",
        "bearer-with-only-spaces",
        "empty-header",
        "two-bearer-headers",
        "bearer-and-basic-headers",
        "two-tokens-in-one-header",
        "comma-list",
        "equals-inside-token",
        "tab-inside-token",
        "non-ascii",
        "nul-byte",
        "oversized",
    ],
)
def test_malformed_or_missing_credentials_get_the_rfc6750_error(
    headers: list[tuple[bytes, bytes]], error: type[AuthError]
) -> None:
    with pytest.raises(AuthError) as raised:
        bearer_token(headers, max_token_bytes=MAX)
    assert type(raised.value) is error
    assert raised.value.status_code in (400, 401)


def test_an_oversized_token_is_refused_as_invalid_token_at_exactly_one_byte_over_the_cap() -> None:
    assert bearer_token([(b"authorization", b"Bearer " + b"a" * 16)], max_token_bytes=16) == "a" * 16
    with pytest.raises(InvalidToken):
        bearer_token([(b"authorization", b"Bearer " + b"a" * 17)], max_token_bytes=16)


def test_error_messages_never_contain_the_token() -> None:
    secret = "SECRETtokenVALUE"
    for value in (f"Bearer {secret} x", f"Bearer {secret * 1000}", f"Basic {secret}"):
        with pytest.raises(AuthError) as raised:
            bearer_token([(b"authorization", value.encode())] * 1, max_token_bytes=MAX)
        assert secret not in str(raised.value)
        assert secret not in raised.value.www_authenticate()


@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"cookie", b"host"]), st.binary(max_size=64))))
def test_any_header_bytes_give_a_token_or_an_auth_error_never_another_exception(
    headers: list[tuple[bytes, bytes]],
) -> None:
    try:
        token = bearer_token(headers, max_token_bytes=32)
    except AuthError:
        return
    assert 0 < len(token) <= 32
    assert [name for name, _ in headers].count(b"authorization") == 1


def test_bearer_credential_makes_every_check_but_the_syntax_which_checked_token_makes() -> None:
    from mcp_gateway.auth.bearer import bearer_credential, checked_token

    raw = bearer_credential([(b"authorization", f"Bearer  {TOKEN} ".encode())], max_token_bytes=MAX)
    assert raw == TOKEN.encode()
    assert checked_token(raw) == TOKEN
    odd = bearer_credential([(b"authorization", b"Bearer a,b")], max_token_bytes=MAX)
    with pytest.raises(InvalidRequest):
        checked_token(odd)
    with pytest.raises(InvalidRequest):
        bearer_credential([(b"authorization", b"Bearer a,b")] * 2, max_token_bytes=MAX)
