"""The token-verifier seam, its verified-token cache, and the factory that builds one from `[auth]`."""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, cast

from mcp_gateway.auth.introspection import IntrospectionVerifier
from mcp_gateway.auth.jwks import JWKSCache
from mcp_gateway.auth.jwt_verifier import JWTVerifier
from mcp_gateway.auth.principal import Principal
from mcp_gateway.errors import ConfigError

if TYPE_CHECKING:
    import httpx2

    from mcp_gateway.config import AuthConfig


class TokenVerifier(Protocol):
    """Turns a bearer token into a `Principal` for one resource, or raises `AuthError`/`AuthUnavailable`."""

    async def verify(self, token: str, *, resource: str) -> Principal: ...

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class CachingVerifier:
    """Remembers successful verifications so a repeated token costs one SHA-256 and a dict lookup.

    Keyed by (SHA-256 of the token, resource): the cache never holds the token itself, and its
    memory is bounded by `max_entries` (least recently used evicted). An entry is never used at or
    past the principal's `exp`, nor past `max_age` seconds after it was verified (introspection:
    RFC 7662 §4 asks to bound how long a revoked token keeps working).

    Failures are not cached: most are refused before any cryptography, an attacker flooding bad
    tokens varies them anyway, and a cached failure could outlive its cause (a JWKS rotation, an
    introspection endpoint that was briefly down).
    """

    def __init__(
        self,
        inner: TokenVerifier,
        *,
        clock: Callable[[], float],
        max_entries: int = 10000,
        max_age: float | None = None,
    ) -> None:
        self._inner = inner
        self._clock = clock
        self._max_entries = max_entries
        self._max_age = max_age
        self._entries: OrderedDict[tuple[bytes, str], tuple[Principal, float]] = OrderedDict()

    @property
    def ready(self) -> bool:
        return self._inner.ready

    async def start(self) -> None:
        await self._inner.start()

    async def aclose(self) -> None:
        self._entries.clear()
        await self._inner.aclose()

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, token: bytes, *, resource: str) -> Principal | None:
        """The principal a still-valid earlier verification of exactly `token` gave, or None.

        Nothing is verified here; a miss is for `verify`. Only tokens that verified are ever stored,
        so a hit also means that these bytes once passed every syntax check.
        """
        return self._lookup((hashlib.sha256(token).digest(), resource))

    def _lookup(self, key: tuple[bytes, str]) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() < entry[1]:
            self._entries.move_to_end(key)
            return entry[0]
        del self._entries[key]
        return None

    async def verify(self, token: str, *, resource: str) -> Principal:
        key = (hashlib.sha256(token.encode()).digest(), resource)
        principal = self._lookup(key)
        if principal is not None:
            return principal
        principal = await self._inner.verify(token, resource=resource)
        now = self._clock()
        valid_until = principal.expires_at
        if self._max_age is not None:
            valid_until = min(valid_until, now + self._max_age)
        if now < valid_until:
            self._entries[key] = (principal, valid_until)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return principal


class _ByTokenFormat:
    """JWS-shaped tokens go to the JWT verifier, everything else to introspection."""

    def __init__(self, jwt: TokenVerifier, opaque: TokenVerifier) -> None:
        self._jwt = jwt
        self._opaque = opaque

    @property
    def ready(self) -> bool:
        return self._jwt.ready and self._opaque.ready

    async def start(self) -> None:
        await self._jwt.start()
        await self._opaque.start()

    async def aclose(self) -> None:
        await self._jwt.aclose()
        await self._opaque.aclose()

    async def verify(self, token: str, *, resource: str) -> Principal:
        # RFC 7515 §7.1 compact JWS has exactly two dots; a JWE (four) is refused by the JWT verifier too.
        target = self._jwt if token.count(".") in (2, 4) else self._opaque
        return await target.verify(token, resource=resource)

    def cached(self, token: bytes, *, resource: str) -> Principal | None:
        target = self._jwt if token.count(b".") in (2, 4) else self._opaque
        lookup = getattr(target, "cached", None)
        return None if lookup is None else cast(Principal | None, lookup(token, resource=resource))


def build_verifier(
    config: AuthConfig,
    *,
    http_client: httpx2.AsyncClient,
    clock: Callable[[], float] = time.time,
    secrets: Mapping[str, str] = os.environ,
) -> TokenVerifier:
    """The verifier `[auth]` describes, wrapped in the verified-token cache.

    - no `introspection_endpoint`: JWTs against the JWKS (`jwks_uri`, or discovered from the issuer);
    - `introspection_endpoint` without `jwks_uri`: every token is introspected (RFC 7662);
    - both: JWS-shaped tokens are verified locally, opaque ones introspected.
    """

    def jwt_verifier() -> TokenVerifier:
        jwks = JWKSCache(
            http_client,
            issuer=config.issuer,
            jwks_uri=config.jwks_uri,
            algorithms=config.algorithms,
            clock=clock,
            cache_seconds=config.jwks_cache_seconds,
            refetch_cooldown_seconds=config.jwks_refetch_cooldown_seconds,
            fetch_timeout_seconds=config.jwks_fetch_timeout_seconds,
            max_stale_seconds=config.jwks_max_stale_seconds,
        )
        inner = JWTVerifier(
            jwks,
            issuer=config.issuer,
            algorithms=config.algorithms,
            clock=clock,
            leeway=config.leeway_seconds,
            max_lifetime=config.max_token_lifetime_seconds,
            max_token_bytes=config.max_token_bytes,
            accept_scp=config.accept_scp_claim,
        )
        return CachingVerifier(inner, clock=clock, max_entries=config.token_cache_size)

    if config.introspection_endpoint is None:
        return jwt_verifier()

    secret_env = config.client_secret_env
    secret = secrets.get(secret_env) if secret_env is not None else None
    if not secret:
        raise ConfigError(
            "gateway.toml",
            "auth.client_secret_env",
            "introspection needs the gateway's client secret: name an environment variable that is set",
        )
    if config.client_id is None:  # AuthConfig's validator already insists; this narrows the type
        raise ConfigError("gateway.toml", "auth.client_id", "introspection needs the gateway's client_id")
    introspection = IntrospectionVerifier(
        http_client,
        endpoint=config.introspection_endpoint,
        client_id=config.client_id,
        client_secret=secret,
        issuer=config.issuer,
        clock=clock,
        leeway=config.leeway_seconds,
        max_lifetime=config.max_token_lifetime_seconds,
        max_token_bytes=config.max_token_bytes,
        accept_scp=config.accept_scp_claim,
        timeout_seconds=config.introspection_timeout_seconds,
    )
    opaque = CachingVerifier(
        introspection,
        clock=clock,
        max_entries=config.token_cache_size,
        max_age=config.introspection_cache_seconds,
    )
    if config.jwks_uri is None:
        return opaque
    return _ByTokenFormat(jwt_verifier(), opaque)
