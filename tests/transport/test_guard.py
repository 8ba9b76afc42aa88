"""Host and Origin checks against DNS rebinding: which values pass, and how the rest are refused."""

from __future__ import annotations

import pytest

from mcp_gateway.config import GatewayConfig
from mcp_gateway.errors import TransportRejected
from mcp_gateway.transport.guard import OriginGuard

GUARD = OriginGuard(
    GatewayConfig(
        public_url="https://gw.example.com",
        port=8080,
        allowed_hosts=("Alt.Example:8443",),
        allowed_origins=("https://app.example/",),
    )
)


@pytest.mark.parametrize(
    "host",
    [b"gw.example.com", b"gw.example.com:443", b"GW.Example.COM", b"127.0.0.1:8080", b"localhost:8080", b"[::1]:8080"],
)
def test_public_and_loopback_hosts_are_served(host: bytes) -> None:
    GUARD.check(host, None)


def test_configured_extra_host_is_served_case_insensitively() -> None:
    GUARD.check(b"alt.example:8443", None)


@pytest.mark.parametrize(
    "host", [b"rebound.attacker.example", b"gw.example.com:8443", b"127.0.0.1", b"localhost:9999", b"", None]
)
def test_any_other_host_is_421(host: bytes | None) -> None:
    with pytest.raises(TransportRejected) as raised:
        GUARD.check(host, None)
    assert (raised.value.status_code, raised.value.message) == (421, "Misdirected request: Host is not served here")


@pytest.mark.parametrize("origin", [b"https://gw.example.com", b"HTTPS://GW.EXAMPLE.COM/", b"https://app.example"])
def test_own_and_configured_origins_are_served(origin: bytes) -> None:
    GUARD.check(b"gw.example.com", origin)


@pytest.mark.parametrize(
    "origin", [b"https://attacker.example", b"null", b"http://gw.example.com", b"https://gw.example.com:444"]
)
def test_any_other_origin_is_403(origin: bytes) -> None:
    with pytest.raises(TransportRejected) as raised:
        GUARD.check(b"gw.example.com", origin)
    assert (raised.value.status_code, raised.value.message) == (403, "Forbidden: Origin is not allowed")


def test_host_is_checked_before_origin() -> None:
    with pytest.raises(TransportRejected) as raised:
        GUARD.check(b"rebound.attacker.example", b"https://attacker.example")
    assert raised.value.status_code == 421


def test_public_url_with_explicit_port_requires_that_port() -> None:
    guard = OriginGuard(GatewayConfig(public_url="http://gw.internal:9000", port=9000))
    guard.check(b"gw.internal:9000", b"http://gw.internal:9000")
    with pytest.raises(TransportRejected):
        guard.check(b"gw.internal", None)
