"""The request-body cap: what is read, and how an oversized, malformed or abandoned body is refused."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mcp_gateway.errors import TransportRejected
from mcp_gateway.transport.asgi import Message
from mcp_gateway.transport.limits import read_body

pytestmark = pytest.mark.anyio


class Client:
    """An ASGI `receive` that hands out the given messages in order and counts how many were taken."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self._messages = list(messages)
        self.taken = 0

    async def __call__(self) -> Message:
        message = self._messages[self.taken]
        self.taken += 1
        return message


def chunks(*parts: bytes) -> list[Message]:
    return [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1} for index, part in enumerate(parts)
    ]


async def refused(client: Client, headers: list[tuple[bytes, bytes]], cap: int) -> TransportRejected:
    with pytest.raises(TransportRejected) as raised:
        await read_body(client, headers, cap)
    return raised.value


async def test_a_body_sent_in_several_messages_is_read_whole_up_to_exactly_the_cap() -> None:
    assert await read_body(Client(chunks(b"ab", b"", b"cd")), [], cap=4) == b"abcd"


async def test_a_declared_length_over_the_cap_is_413_before_any_byte_is_read() -> None:
    client = Client(chunks(b"x" * 5))
    error = await refused(client, [(b"content-length", b"5")], cap=4)
    assert (error.status_code, client.taken) == (413, 0)
    assert "4 bytes" in error.message


async def test_a_body_without_length_is_413_at_the_message_that_crosses_the_cap() -> None:
    client = Client(chunks(b"abc", b"de", b"never read"))
    error = await refused(client, [], cap=4)
    assert (error.status_code, client.taken) == (413, 2)


async def test_a_body_longer_than_its_declared_length_is_still_capped() -> None:
    error = await refused(Client(chunks(b"abc", b"de")), [(b"content-length", b"3")], cap=4)
    assert error.status_code == 413


@pytest.mark.parametrize("value", [b"", b"-1", b"4 ", b"0x4", b"\xd9\xa3"])
async def test_a_content_length_that_is_not_digits_is_400(value: bytes) -> None:
    error = await refused(Client(chunks(b"abcd")), [(b"content-length", value)], cap=4)
    assert error.status_code == 400


async def test_a_client_that_disconnects_mid_body_is_499() -> None:
    client = Client([*chunks(b"ab", b"more")[:1], {"type": "http.disconnect"}])
    error = await refused(client, [], cap=4)
    assert (error.status_code, client.taken) == (499, 2)
