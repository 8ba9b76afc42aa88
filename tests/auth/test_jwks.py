from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.auth.jwks import JWKSCache, metadata_urls, parse_jwk
from mcp_gateway.auth.verifier import TokenVerifier, build_verifier
from mcp_gateway.errors import AuthUnavailable, InvalidToken
from tests._jws import b64url
from tests._servers import refused_url

from ._support import (
    ISSUER,
    RESOURCE,
    FakeClock,
    JWKSEndpoint,
    StubRequest,
    StubResponse,
    StubServer,
    ec_key,
    ed448_jwk,
    ed25519_key,
    good_claims,
    rsa_key,
    sign,
    stub_server,
)
from .conftest import make_auth_config

pytestmark = pytest.mark.anyio

ALL = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
RSA1, RSA2 = rsa_key("rsa-1"), rsa_key("rsa-2", index=1)


def cache(http_client: httpx2.AsyncClient, url: str | None, clock: FakeClock, **kwargs: Any) -> JWKSCache:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "jwks_uri": url,
        "algorithms": ALL,
        "clock": clock,
        "cache_seconds": 300,
        "refetch_cooldown_seconds": 10,
        "fetch_timeout_seconds": 2,
    }
    settings.update(kwargs)
    return JWKSCache(http_client, **settings)


@pytest.fixture
async def loaded(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> AsyncIterator[JWKSCache]:
    jwks_endpoint.keys = [RSA1.jwk]
    keys = cache(http_client, jwks_server.url + "/jwks.json", clock, fetch_timeout_seconds=0.5)
    with anyio.fail_after(5):
        assert await keys.refresh()
    yield keys


# --- parsing: each key with its own algorithms only ------------------------------------------------


@pytest.mark.parametrize(
    ("jwk", "algorithms"),
    [
        (RSA1.jwk, {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
        ({**RSA1.jwk, "alg": "PS256"}, {"PS256"}),
        (ec_key().jwk, {"ES256"}),
        (ec_key("p384", curve="P-384").jwk, {"ES384"}),
        (ec_key("p521", curve="P-521").jwk, {"ES512"}),
        (ed25519_key().jwk, {"EdDSA"}),
    ],
    ids=["rsa", "rsa-with-alg", "ec-p256", "ec-p384", "ec-p521", "ed25519"],
)
def test_each_key_type_maps_to_its_own_algorithm_family(jwk: dict[str, Any], algorithms: set[str]) -> None:
    key = parse_jwk(jwk, ALL)
    assert key is not None and key.algorithms == algorithms


def test_key_algorithms_are_intersected_with_the_configured_ones() -> None:
    key = parse_jwk(RSA1.jwk, frozenset({"RS256", "ES256"}))
    assert key is not None and key.algorithms == {"RS256"}
    assert parse_jwk(ec_key().jwk, frozenset({"RS256"})) is None


@pytest.mark.parametrize(
    "jwk",
    [
        {**RSA1.jwk, "use": "enc"},
        {**RSA1.jwk, "key_ops": ["encrypt"]},
        {**RSA1.jwk, "alg": "HS256"},
        {**RSA1.jwk, "alg": "ES256"},
        {**ec_key().jwk, "alg": "ES384"},
        {**ec_key().jwk, "crv": "P-384"},
        {**ec_key().jwk, "crv": "secp256k1"},
        ed448_jwk(),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**RSA1.jwk, "d": "AQAB"},
        rsa_key("small", index=5, bits=1024).jwk,
        {**RSA1.jwk, "kid": 7},
        {**RSA1.jwk, "n": "not base64 !"},
        {"kty": "RSA"},
        {"kty": "EC", "crv": "P-256", "x": b64url(b"\x00" * 31 + b"\x01"), "y": b64url(b"\x00" * 31 + b"\x01")},
        {"kty": "XYZ"},
        "a string",
        ["a", "list"],
    ],
    ids=[
        "use-enc",
        "key-ops-without-verify",
        "rsa-key-claiming-hs256",
        "rsa-key-claiming-es256",
        "p256-key-claiming-es384",
        "curve-mismatch-with-coordinates",
        "secp256k1",
        "ed448",
        "symmetric-key",
        "private-rsa-key",
        "rsa-1024",
        "numeric-kid",
        "bad-modulus",
        "rsa-without-members",
        "point-not-on-curve",
        "unknown-kty",
        "not-an-object",
        "array",
    ],
)
def test_unusable_or_dangerous_jwks_members_are_skipped(jwk: object) -> None:
    assert parse_jwk(jwk, ALL) is None


def test_rfc8414_metadata_urls_insert_the_well_known_segment_before_the_issuer_path() -> None:
    assert metadata_urls("https://as.example.com") == (
        "https://as.example.com/.well-known/oauth-authorization-server",
        "https://as.example.com/.well-known/openid-configuration",
    )
    assert metadata_urls("https://as.example.com/tenant/1/") == (
        "https://as.example.com/.well-known/oauth-authorization-server/tenant/1",
        "https://as.example.com/tenant/1/.well-known/openid-configuration",
    )


# --- rotation ---------------------------------------------------------------------------------------


async def test_a_new_key_is_accepted_after_exactly_one_refetch(
    loaded: JWKSCache, jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA1.jwk, RSA2.jwk]
    clock.advance(10)
    with anyio.fail_after(5):
        key = await loaded.get_key("rsa-2", "RS256")
        assert key.kid == "rsa-2"
        await loaded.get_key("rsa-2", "RS256")
        await loaded.get_key("rsa-1", "RS256")
    assert jwks_server.count("/jwks.json") == 2


async def test_a_removed_key_keeps_working_until_the_cache_ttl_and_then_stops(
    loaded: JWKSCache, jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA2.jwk]
    clock.advance(299)
    with anyio.fail_after(5):
        assert (await loaded.get_key("rsa-1", "RS256")).kid == "rsa-1"
    assert jwks_server.count("/jwks.json") == 1
    clock.advance(1)
    with pytest.raises(InvalidToken), anyio.fail_after(5):
        await loaded.get_key("rsa-1", "RS256")
    assert jwks_server.count("/jwks.json") == 2


async def test_a_removed_key_stops_working_end_to_end_after_the_ttl(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA1.jwk]
    verifier = build_verifier(make_auth_config(jwks_server.url + "/jwks.json"), http_client=http_client, clock=clock)
    with anyio.fail_after(5):
        await verifier.start()
        await verifier.verify(sign(RSA1, good_claims(now=clock.now)), resource=RESOURCE)
        jwks_endpoint.keys = [RSA2.jwk]
        clock.advance(301)
        with pytest.raises(InvalidToken):
            await verifier.verify(sign(RSA1, good_claims(now=clock.now)), resource=RESOURCE)
        await verifier.verify(sign(RSA2, good_claims(now=clock.now)), resource=RESOURCE)


async def test_jwks_max_stale_seconds_bounds_how_long_cached_keys_outlive_a_failing_endpoint(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA1.jwk]
    config = make_auth_config(jwks_server.url + "/jwks.json", jwks_cache_seconds=300, jwks_max_stale_seconds=60)
    verifier = build_verifier(config, http_client=http_client, clock=clock)
    with anyio.fail_after(5):
        await verifier.start()
        jwks_endpoint.mode = "error"
        clock.advance(300 + 60)
        await verifier.verify(sign(RSA1, good_claims(now=clock.now)), resource=RESOURCE)  # stale, still served
        clock.advance(11)  # past the limit, and past the refetch cool-down
        with pytest.raises(AuthUnavailable) as raised:
            await verifier.verify(sign(RSA1, good_claims(now=clock.now)), resource=RESOURCE)
    assert raised.value.status_code == 503


# --- faults: never replace good keys with bad ones ----------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["error", "garbage", "empty", "huge", "huge-chunked", "gzip", "redirect", "slow", "down"]
)
async def test_with_keys_cached_a_failing_jwks_endpoint_never_replaces_them(
    loaded: JWKSCache, jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, clock: FakeClock, mode: str
) -> None:
    if mode == "down":
        loaded._jwks_uri = refused_url() + "/jwks.json"  # the endpoint stops listening
    else:
        jwks_endpoint.mode = mode
    jwks_endpoint.keys = [RSA2.jwk]  # were a bad answer taken, rsa-1 would stop working
    clock.advance(301)  # stale: the next lookup tries to refresh
    with anyio.fail_after(5):
        assert (await loaded.get_key("rsa-1", "RS256")).kid == "rsa-1"
    assert loaded.fetch_count == 2
    with pytest.raises(InvalidToken), anyio.fail_after(5):
        await loaded.get_key("unknown", "RS256")  # still a verdict on the token, not 503
    assert loaded.ready


async def test_a_failed_refresh_is_retried_only_after_the_cooldown(
    loaded: JWKSCache, jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, clock: FakeClock
) -> None:
    jwks_endpoint.mode = "error"
    clock.advance(301)
    with anyio.fail_after(5):
        for _ in range(20):
            await loaded.get_key("rsa-1", "RS256")
        assert jwks_server.count("/jwks.json") == 2
        jwks_endpoint.mode, jwks_endpoint.keys = "up", [RSA2.jwk]
        clock.advance(10)
        with pytest.raises(InvalidToken):
            await loaded.get_key("rsa-1", "RS256")
    assert jwks_server.count("/jwks.json") == 3


async def test_stale_keys_are_not_served_forever_while_the_endpoint_stays_down(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA1.jwk]
    keys = cache(http_client, jwks_server.url + "/jwks.json", clock, max_stale_seconds=3600)
    with anyio.fail_after(5):
        await keys.refresh()
        jwks_endpoint.mode = "error"
        clock.advance(300 + 3600)
        await keys.get_key("rsa-1", "RS256")
        clock.advance(1)
        with pytest.raises(AuthUnavailable):
            await keys.get_key("rsa-1", "RS256")


async def test_cold_start_with_the_endpoint_refusing_connections_is_not_ready_and_unavailable(
    http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    keys = cache(http_client, refused_url() + "/jwks.json", clock)
    with anyio.fail_after(5):
        assert not await keys.refresh()
        assert not keys.ready
        with pytest.raises(AuthUnavailable) as raised:
            await keys.get_key("rsa-1", "RS256")
    assert raised.value.status_code == 503
    assert keys.fetch_count == 1  # inside the cool-down: the failing request did not fetch again


async def test_concurrent_lookups_of_an_unknown_kid_share_one_fetch(
    loaded: JWKSCache, jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, clock: FakeClock
) -> None:
    jwks_endpoint.mode, jwks_endpoint.keys = "slow", [RSA1.jwk, RSA2.jwk]
    jwks_endpoint.arrived = anyio.Event()
    clock.advance(10)
    found: list[str | None] = []

    async def lookup() -> None:
        found.append((await loaded.get_key("rsa-2", "RS256")).kid)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(lookup)
            await jwks_endpoint.arrived.wait()
            await anyio.wait_all_tasks_blocked()
            assert jwks_server.count("/jwks.json") == 2  # the start-up fetch and the one shared refetch
            jwks_endpoint.release.set()
    assert found == ["rsa-2"] * 50
    assert jwks_server.count("/jwks.json") == 2


async def test_while_a_stale_set_is_being_refreshed_other_requests_are_not_held_up(
    loaded: JWKSCache, jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, clock: FakeClock
) -> None:
    jwks_endpoint.mode = "slow"
    jwks_endpoint.arrived = anyio.Event()
    clock.advance(301)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(loaded.get_key, "rsa-1", "RS256")  # this one refreshes and waits
            await jwks_endpoint.arrived.wait()
            assert (await loaded.get_key("rsa-1", "RS256")).kid == "rsa-1"  # served from the stale set
            jwks_endpoint.release.set()


async def test_a_slow_jwks_endpoint_is_bounded_by_the_fetch_timeout(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    jwks_endpoint.mode = "slow"
    keys = cache(http_client, jwks_server.url + "/jwks.json", clock, fetch_timeout_seconds=0.2)
    with anyio.fail_after(3):
        assert not await keys.refresh()
    assert not keys.ready


# --- discovery (RFC 8414, then OpenID) ----------------------------------------------------------------


@pytest.mark.parametrize("document", ["oauth-authorization-server", "openid-configuration"])
async def test_without_jwks_uri_the_keys_are_found_through_issuer_metadata(
    http_client: httpx2.AsyncClient, clock: FakeClock, document: str
) -> None:
    async def issuer(request: StubRequest) -> StubResponse:
        if request.path == f"/.well-known/{document}":
            return StubResponse.json({"issuer": base, "jwks_uri": base + "/keys"})
        if request.path == "/keys":
            return StubResponse.json({"keys": [RSA1.jwk]})
        return StubResponse(status=404)

    async with stub_server(issuer) as server:
        base = server.url
        keys = cache(http_client, None, clock, issuer=base)
        with anyio.fail_after(5):
            assert await keys.refresh()
            assert (await keys.get_key("rsa-1", "RS256")).kid == "rsa-1"
        assert server.count("/keys") == 1


@pytest.mark.parametrize(
    "metadata",
    [
        {"issuer": "{base}/", "jwks_uri": "{base}/keys"},
        {"issuer": "https://evil.example", "jwks_uri": "{base}/keys"},
        {"jwks_uri": "{base}/keys"},
        {"issuer": "{base}", "jwks_uri": "http://example.com/keys"},
        {"issuer": "{base}", "jwks_uri": 7},
    ],
    ids=["issuer-trailing-slash", "other-issuer", "no-issuer", "plain-http-remote-jwks", "jwks-uri-not-a-string"],
)
async def test_metadata_naming_another_issuer_or_an_unsafe_jwks_uri_is_not_used(
    http_client: httpx2.AsyncClient, clock: FakeClock, metadata: dict[str, Any]
) -> None:
    async def issuer(request: StubRequest) -> StubResponse:
        if request.path == "/.well-known/oauth-authorization-server":
            return StubResponse.json(
                {name: value.format(base=base) if isinstance(value, str) else value for name, value in metadata.items()}
            )
        if request.path == "/keys":
            return StubResponse.json({"keys": [RSA1.jwk]})
        return StubResponse(status=404)

    async with stub_server(issuer) as server:
        base = server.url
        keys = cache(http_client, None, clock, issuer=base)
        with anyio.fail_after(5):
            assert not await keys.refresh()
        assert not keys.ready
        assert server.count("/keys") == 0


async def test_verifier_start_prefetches_so_the_first_request_does_not_wait(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA1.jwk]
    verifier: TokenVerifier = build_verifier(
        make_auth_config(jwks_server.url + "/jwks.json"), http_client=http_client, clock=clock
    )
    assert not verifier.ready
    with anyio.fail_after(5):
        await verifier.start()
    assert verifier.ready
    assert jwks_server.count("/jwks.json") == 1
