from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx2
import pytest

from mcp_gateway.auth.introspection import IntrospectionVerifier
from mcp_gateway.auth.verifier import TokenVerifier, build_verifier
from mcp_gateway.errors import AuthUnavailable, ConfigError, InvalidToken
from tests._servers import refused_url

from ._support import (
    ABSENT,
    HOSTILE_IDENTITY_VALUES,
    ISSUER,
    RESOURCE,
    FakeClock,
    StubRequest,
    StubResponse,
    StubServer,
    good_claims,
    stub_server,
)
from .conftest import make_auth_config

pytestmark = pytest.mark.anyio

OPAQUE = "opaque-token-0123456789"
SECRET = "gateway secret:with/odd+chars"


@dataclass
class IntrospectionEndpoint:
    """A small RFC 7662 endpoint: answers for tokens it knows, or misbehaves as told."""

    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "up"  # up | error | garbage | unauthorized | slow | huge
    release: anyio.Event = field(default_factory=anyio.Event)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, request: StubRequest) -> StubResponse:
        self.arrived.set()
        if self.mode == "slow":
            await self.release.wait()
        if self.mode == "error":
            return StubResponse(status=500)
        if self.mode == "unauthorized":
            return StubResponse.json({"error": "invalid_client"}, status=401)
        if self.mode == "garbage":
            return StubResponse(body=b"{not json")
        if self.mode == "huge":
            return StubResponse.json({"active": True, "pad": "x" * 200_000})
        token = parse_qs(request.body.decode())["token"][0]
        return StubResponse.json(self.tokens.get(token, {"active": False}))


@pytest.fixture
def endpoint() -> IntrospectionEndpoint:
    return IntrospectionEndpoint(tokens={OPAQUE: {"active": True, **good_claims()}})


@pytest.fixture
async def server(endpoint: IntrospectionEndpoint) -> AsyncIterator[StubServer]:
    async with stub_server(endpoint) as server:
        yield server
    endpoint.release.set()


def make_verifier(
    server_url: str, http_client: httpx2.AsyncClient, clock: FakeClock, **overrides: Any
) -> TokenVerifier:
    config = make_auth_config(
        None,
        introspection_endpoint=server_url + "/introspect",
        client_id="gateway",
        client_secret_env="GATEWAY_SECRET",
        introspection_timeout_seconds=0.5,
        **overrides,
    )
    return build_verifier(config, http_client=http_client, clock=clock, secrets={"GATEWAY_SECRET": SECRET})


async def verify(verifier: TokenVerifier, token: str = OPAQUE) -> Any:
    with anyio.fail_after(5):
        return await verifier.verify(token, resource=RESOURCE)


async def test_an_active_token_becomes_a_principal_and_the_request_is_rfc7662_shaped(
    server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(server.url, http_client, clock)
    assert verifier.ready
    principal = await verify(verifier)
    assert (principal.agent_id, principal.delegating_user, principal.token_id) == ("agent-1", "alice", "token-1")
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/introspect")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {"token": [OPAQUE], "token_type_hint": ["access_token"]}
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "gateway:gateway%20secret%3Awith%2Fodd%2Bchars"  # RFC 6749 §2.3.1


@pytest.mark.parametrize(
    "response",
    [
        {"active": False},
        {"active": "true", **good_claims()},
        {"active": 1, **good_claims()},
        {**good_claims()},
        {"active": True, **good_claims(aud="http://127.0.0.1:8080/other/mcp")},
        {"active": True, **good_claims(aud=ABSENT)},
        {"active": True, **good_claims(iss="https://evil.example")},
        {"active": True, **good_claims(exp=ABSENT)},
        {"active": True, **good_claims(exp=1_799_000_000, iat=1_798_999_000, nbf=ABSENT)},
        {"active": True, **good_claims(scope=["admin"])},
    ],
    ids=[
        "inactive",
        "active-string",
        "active-number",
        "active-missing",
        "other-audience",
        "no-audience",
        "other-issuer",
        "no-exp",
        "expired",
        "scope-wrong-type",
    ],
)
async def test_inactive_or_unacceptable_introspection_results_are_invalid_token(
    endpoint: IntrospectionEndpoint,
    server: StubServer,
    http_client: httpx2.AsyncClient,
    clock: FakeClock,
    response: dict[str, Any],
) -> None:
    endpoint.tokens[OPAQUE] = response
    with pytest.raises(InvalidToken):
        await verify(make_verifier(server.url, http_client, clock))


@pytest.mark.parametrize("claim", ["sub", "client_id", "azp", "jti", "act.sub"])
async def test_introspection_results_whose_identity_claims_hold_control_characters_are_invalid_token(
    endpoint: IntrospectionEndpoint, server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock, claim: str
) -> None:
    # SECURITY.md "identity claims with control characters are refused": an introspection endpoint's
    # answer becomes a principal through the same checks as a JWT's claims.
    verifier = make_verifier(server.url, http_client, clock)
    for family, (value, defect) in HOSTILE_IDENTITY_VALUES.items():
        token = f"{OPAQUE}-{family}"  # a token per answer: the verified-token cache never answers for another
        if claim == "act.sub":
            claims = good_claims(act={"sub": value})
        else:
            claims = good_claims(**{claim: value, **({"client_id": ABSENT} if claim == "azp" else {})})
        endpoint.tokens[token] = {"active": True, **claims}
        with pytest.raises(InvalidToken) as raised:
            await verify(verifier, token)
        assert raised.value.message == f"the token's {claim} claim {defect}", family
    assert len(server.requests) == len(HOSTILE_IDENTITY_VALUES)  # each answer was really introspected


async def test_an_absent_iss_is_accepted_from_the_introspection_endpoint(
    endpoint: IntrospectionEndpoint, server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    endpoint.tokens[OPAQUE] = {"active": True, **good_claims(iss=ABSENT)}
    assert (await verify(make_verifier(server.url, http_client, clock))).issuer == ISSUER


@pytest.mark.parametrize("mode", ["error", "unauthorized", "garbage", "huge", "slow", "down"])
async def test_an_unavailable_introspection_endpoint_is_503_not_401(
    endpoint: IntrospectionEndpoint, server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock, mode: str
) -> None:
    endpoint.mode = mode
    url = refused_url() if mode == "down" else server.url
    with pytest.raises(AuthUnavailable) as raised:
        await verify(make_verifier(url, http_client, clock))
    assert raised.value.status_code == 503
    assert SECRET not in str(raised.value) and OPAQUE not in str(raised.value)


async def test_results_are_cached_for_at_most_introspection_cache_seconds(
    endpoint: IntrospectionEndpoint, server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(server.url, http_client, clock, introspection_cache_seconds=30)
    await verify(verifier)
    clock.advance(29)
    await verify(verifier)
    assert len(server.requests) == 1
    endpoint.tokens[OPAQUE] = {"active": False}  # revoked
    clock.advance(1)
    with pytest.raises(InvalidToken):
        await verify(verifier)
    assert len(server.requests) == 2


async def test_results_are_never_cached_past_the_token_exp(
    endpoint: IntrospectionEndpoint, server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    endpoint.tokens[OPAQUE] = {"active": True, **good_claims(exp=int(clock.now) + 10)}
    verifier = make_verifier(server.url, http_client, clock, introspection_cache_seconds=600)
    await verify(verifier)
    clock.advance(10)
    await verify(verifier)  # exp passed (inside leeway): asked again rather than served from cache
    assert len(server.requests) == 2


async def test_zero_cache_seconds_introspects_every_time(
    server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(server.url, http_client, clock, introspection_cache_seconds=0)
    await verify(verifier)
    await verify(verifier)
    assert len(server.requests) == 2


async def test_concurrent_requests_with_the_same_new_token_make_one_introspection_call(
    endpoint: IntrospectionEndpoint, server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    endpoint.mode = "slow"
    verifier = IntrospectionVerifier(
        http_client,
        endpoint=server.url + "/introspect",
        client_id="gateway",
        client_secret=SECRET,
        issuer=ISSUER,
        clock=clock,
    )
    agents: list[str] = []

    async def call() -> None:
        agents.append((await verifier.verify(OPAQUE, resource=RESOURCE)).agent_id)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(call)
            await endpoint.arrived.wait()
            await anyio.wait_all_tasks_blocked()
            endpoint.mode = "up"
            endpoint.release.set()
    assert agents == ["agent-1"] * 20
    assert len(server.requests) == 1
    assert SECRET not in repr(verifier)


async def test_an_oversized_token_is_not_sent_to_the_introspection_endpoint(
    server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    with pytest.raises(InvalidToken):
        await verify(make_verifier(server.url, http_client, clock, max_token_bytes=64), "x" * 65)
    assert server.requests == []


async def test_introspection_without_the_secret_in_the_environment_is_a_config_error(
    http_client: httpx2.AsyncClient,
) -> None:
    config = make_auth_config(
        None, introspection_endpoint="https://as.example/introspect", client_id="gw", client_secret_env="MISSING"
    )
    with pytest.raises(ConfigError) as raised:
        build_verifier(config, http_client=http_client, secrets={})
    assert raised.value.key == "auth.client_secret_env"


async def test_with_both_jwks_and_introspection_configured_opaque_tokens_are_introspected_and_jwts_are_not(
    server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    config = make_auth_config(
        refused_url() + "/jwks.json",
        introspection_endpoint=server.url + "/introspect",
        client_id="gateway",
        client_secret_env="S",
    )
    verifier = build_verifier(config, http_client=http_client, clock=clock, secrets={"S": SECRET})
    assert (await verify(verifier)).agent_id == "agent-1"
    with pytest.raises(AuthUnavailable):  # JWKS unreachable: the JWT path, not introspection
        await verify(verifier, "eyJhbGciOiJFUzI1NiJ9.e30.c2ln")
    assert len(server.requests) == 1
    assert not verifier.ready
