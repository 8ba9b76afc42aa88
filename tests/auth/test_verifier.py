from __future__ import annotations

import httpx2
import pytest

from mcp_gateway.auth import CachingVerifier, Principal, TokenVerifier, build_verifier
from mcp_gateway.errors import AuthUnavailable, HTTPError, InvalidToken

from ._support import RESOURCE, FakeClock
from .conftest import make_auth_config

pytestmark = pytest.mark.anyio

OTHER = "http://127.0.0.1:8080/other/mcp"


class CountingVerifier:
    """An inner verifier whose answers the test scripts: good tokens start with "good"."""

    def __init__(self, expires_at: float = 2e9) -> None:
        self.calls = 0
        self.expires_at = expires_at
        self.ready = True

    async def verify(self, token: str, *, resource: str) -> Principal:
        self.calls += 1
        if not token.startswith("good"):
            raise InvalidToken("bad token")
        return Principal(
            issuer="https://issuer.test",
            subject="alice",
            agent_id=token,
            delegating_user="alice",
            actors=(),
            scopes=frozenset(),
            expires_at=self.expires_at,
            token_id="t",
            audience=(resource,),
        )

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_a_repeated_token_is_verified_once_per_resource(clock: FakeClock) -> None:
    inner = CountingVerifier()
    verifier: TokenVerifier = CachingVerifier(inner, clock=clock)
    first = await verifier.verify("good-1", resource=RESOURCE)
    assert await verifier.verify("good-1", resource=RESOURCE) is first
    assert inner.calls == 1
    await verifier.verify("good-1", resource=OTHER)
    assert inner.calls == 2


async def test_a_cached_principal_is_never_used_at_or_after_its_exp(clock: FakeClock) -> None:
    inner = CountingVerifier(expires_at=clock.now + 5)
    verifier = CachingVerifier(inner, clock=clock)
    await verifier.verify("good-1", resource=RESOURCE)
    clock.advance(4.999)
    await verifier.verify("good-1", resource=RESOURCE)
    assert inner.calls == 1
    clock.advance(0.001)
    await verifier.verify("good-1", resource=RESOURCE)
    assert inner.calls == 2


async def test_an_already_expired_principal_is_not_stored(clock: FakeClock) -> None:
    inner = CountingVerifier(expires_at=clock.now - 1)  # accepted by the inner verifier thanks to leeway
    verifier = CachingVerifier(inner, clock=clock)
    await verifier.verify("good-1", resource=RESOURCE)
    assert len(verifier) == 0


async def test_max_age_bounds_an_entry_below_its_exp(clock: FakeClock) -> None:
    inner = CountingVerifier()
    verifier = CachingVerifier(inner, clock=clock, max_age=30)
    await verifier.verify("good-1", resource=RESOURCE)
    clock.advance(30)
    await verifier.verify("good-1", resource=RESOURCE)
    assert inner.calls == 2


async def test_failures_are_not_cached(clock: FakeClock) -> None:
    inner = CountingVerifier()
    verifier = CachingVerifier(inner, clock=clock)
    for _ in range(3):
        with pytest.raises(InvalidToken):
            await verifier.verify("bad", resource=RESOURCE)
    assert inner.calls == 3
    assert len(verifier) == 0


async def test_the_cache_is_bounded_and_evicts_the_least_recently_used(clock: FakeClock) -> None:
    inner = CountingVerifier()
    verifier = CachingVerifier(inner, clock=clock, max_entries=3)
    for token in ("good-1", "good-2", "good-3"):
        await verifier.verify(token, resource=RESOURCE)
    await verifier.verify("good-1", resource=RESOURCE)  # now most recently used
    await verifier.verify("good-4", resource=RESOURCE)  # evicts good-2
    assert len(verifier) == 3
    calls = inner.calls
    await verifier.verify("good-1", resource=RESOURCE)
    await verifier.verify("good-3", resource=RESOURCE)
    assert inner.calls == calls
    await verifier.verify("good-2", resource=RESOURCE)
    assert inner.calls == calls + 1


async def test_the_cache_does_not_keep_the_token_itself(clock: FakeClock) -> None:
    verifier = CachingVerifier(CountingVerifier(), clock=clock)
    await verifier.verify("good-secret-token-value", resource=RESOURCE)
    assert all(b"good-secret" not in digest for digest, _ in verifier._entries)
    assert all(len(digest) == 32 for digest, _ in verifier._entries)


async def test_aclose_empties_the_cache(clock: FakeClock) -> None:
    verifier = CachingVerifier(CountingVerifier(), clock=clock)
    await verifier.verify("good-1", resource=RESOURCE)
    await verifier.aclose()
    assert len(verifier) == 0


def test_auth_unavailable_is_a_503_http_error_with_retry_after() -> None:
    error = AuthUnavailable("keys unavailable")
    assert isinstance(error, HTTPError)
    assert error.status_code == 503
    assert ("retry-after", "5") in error.headers


async def test_build_verifier_without_introspection_is_a_cached_jwt_verifier(clock: FakeClock) -> None:
    async with httpx2.AsyncClient() as client:
        verifier = build_verifier(make_auth_config("https://issuer.test/jwks.json"), http_client=client, clock=clock)
    assert isinstance(verifier, CachingVerifier)
    assert not verifier.ready


async def test_cached_answers_only_from_earlier_verifications_and_never_past_their_validity(clock: FakeClock) -> None:
    inner = CountingVerifier(expires_at=clock.now + 5)
    verifier = CachingVerifier(inner, clock=clock)
    assert verifier.cached(b"good-1", resource=RESOURCE) is None
    principal = await verifier.verify("good-1", resource=RESOURCE)
    assert verifier.cached(b"good-1", resource=RESOURCE) is principal
    assert verifier.cached(b"good-1", resource=OTHER) is None
    assert verifier.cached(b"good-2", resource=RESOURCE) is None
    with pytest.raises(InvalidToken):
        await verifier.verify("bad", resource=RESOURCE)
    assert verifier.cached(b"bad", resource=RESOURCE) is None
    clock.advance(5)
    assert verifier.cached(b"good-1", resource=RESOURCE) is None
    assert len(verifier) == 0
    assert inner.calls == 2
