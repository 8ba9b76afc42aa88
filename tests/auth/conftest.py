from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from mcp_gateway.config import AuthConfig

from ._support import ISSUER, FakeClock, JWKSEndpoint, StubServer, stub_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def tls_context() -> ssl.SSLContext:
    # Building a default context (loading the CA store) costs ~50 ms; every test needs the same one.
    return ssl.create_default_context()


@pytest.fixture
async def http_client(tls_context: ssl.SSLContext) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(verify=tls_context) as client:
        yield client


@pytest.fixture
def jwks_endpoint() -> JWKSEndpoint:
    return JWKSEndpoint()


@pytest.fixture
async def jwks_server(jwks_endpoint: JWKSEndpoint) -> AsyncIterator[StubServer]:
    async with stub_server(jwks_endpoint) as server:
        yield server
    jwks_endpoint.release.set()


def make_auth_config(jwks_uri: str | None, **overrides: Any) -> AuthConfig:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "jwks_uri": jwks_uri,
        "algorithms": ("RS256", "PS256", "ES256", "ES384", "EdDSA"),
        "leeway_seconds": 60,
        "max_token_lifetime_seconds": 3600,
        "jwks_cache_seconds": 300,
        "jwks_refetch_cooldown_seconds": 10.0,
        "jwks_fetch_timeout_seconds": 2.0,
    }
    settings.update(overrides)
    return AuthConfig(**settings)
