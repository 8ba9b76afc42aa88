"""The issuer's signing keys: fetched from its JWKS, parsed once, refreshed carefully, never replaced by junk."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
from jwt.algorithms import Algorithm, get_default_algorithms

from mcp_gateway.config import is_loopback
from mcp_gateway.errors import AuthUnavailable, InvalidToken

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1024 * 1024
_MIN_RSA_BITS = 2048  # RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used"

# RFC 8725 §3.1 / §2.1: each key is only ever used with the algorithms its type allows.
# This table is what stops algorithm confusion (CVE-2022-29217): an RSA key is never an HMAC secret.
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"}), "P-521": frozenset({"ES512"})}
_OKP_ALGORITHMS = {"Ed25519": frozenset({"EdDSA"})}
# Private or symmetric key members (RFC 7518 §6.2.2, §6.3.2, §6.4): such a key has no place in a JWKS.
_SECRET_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_PYJWT_ALGORITHMS: Mapping[str, Algorithm] = get_default_algorithms()


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from the JWKS, parsed once, with the algorithms it may verify."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    _verifiers: Mapping[str, tuple[Algorithm, Any]]

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """Check a JWS signature with `alg`, which must be one of this key's algorithms."""
        algorithm, key = self._verifiers[alg]
        return bool(algorithm.verify(signing_input, key, signature))


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[VerificationKey, ...]
    by_kid: Mapping[str, tuple[VerificationKey, ...]]
    fetched_at: float

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...] | None:
        """Keys that could have made this signature; None when the kid is not in the set at all."""
        if kid is None:
            matching = tuple(key for key in self.keys if alg in key.algorithms)
            return matching or None
        named = self.by_kid.get(kid)
        if named is None:
            return None
        return tuple(key for key in named if alg in key.algorithms)


class _FetchFailed(Exception):
    """A metadata or JWKS fetch produced nothing usable."""


def parse_jwk(jwk: object, allowed_algorithms: frozenset[str]) -> VerificationKey | None:
    """A verification key from one JWK, or None if it is unusable for verifying our tokens."""
    if not isinstance(jwk, dict):
        return None
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    # RFC 7517 §4.2: a key whose `use` is not "sig" is not for signatures.
    if jwk.get("use", "sig") != "sig":
        return None
    # RFC 7517 §4.3: `key_ops`, when present, must allow verification.
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    if _SECRET_MEMBERS & jwk.keys():
        return None  # a private or symmetric key in a public key set: refuse to use it at all
    if kty == "RSA":
        algorithms = _RSA_ALGORITHMS
    elif kty == "EC":
        algorithms = _EC_ALGORITHMS.get(str(jwk.get("crv")), frozenset())
    elif kty == "OKP":
        algorithms = _OKP_ALGORITHMS.get(str(jwk.get("crv")), frozenset())
    else:
        return None
    # RFC 7517 §4.4: a key that names its `alg` is used with that algorithm only.
    if "alg" in jwk:
        algorithms = algorithms & {jwk["alg"]} if isinstance(jwk["alg"], str) else frozenset()
    algorithms = algorithms & allowed_algorithms
    if not algorithms:
        return None
    try:
        public_key = _PYJWT_ALGORITHMS[next(iter(algorithms))].from_jwk(jwk)
        if kty == "RSA" and public_key.key_size < _MIN_RSA_BITS:
            return None
        # prepare_key checks the key type and, for EC, that the curve is the algorithm's curve.
        verifiers = {
            alg: (_PYJWT_ALGORITHMS[alg], _PYJWT_ALGORITHMS[alg].prepare_key(public_key)) for alg in algorithms
        }
    except Exception:  # pyjwt and cryptography raise a variety of errors for bad key material
        return None
    return VerificationKey(kid=kid, kty=kty, algorithms=frozenset(algorithms), _verifiers=verifiers)


def _parse_jwks(document: object, allowed_algorithms: frozenset[str], *, fetched_at: float) -> _KeySet:
    """RFC 7517 §5: a JWK Set; unusable members are skipped, and a set with no usable key is an error."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchFailed("not a JWK Set")
    keys = tuple(key for key in (parse_jwk(jwk, allowed_algorithms) for jwk in document["keys"]) if key is not None)
    if not keys:
        raise _FetchFailed("the JWK Set has no usable signing keys")
    by_kid: dict[str, tuple[VerificationKey, ...]] = {}
    for key in keys:
        if key.kid is not None:
            by_kid[key.kid] = (*by_kid.get(key.kid, ()), key)
    return _KeySet(keys=keys, by_kid=by_kid, fetched_at=fetched_at)


def metadata_urls(issuer: str) -> tuple[str, ...]:
    """Where the issuer's metadata lives: RFC 8414 §3.1 first, then OpenID Connect Discovery §4."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return (
        # RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
        urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")),
        # OpenID Connect Discovery 1.0 §4: appended to the issuer.
        urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", "")),
    )


class JWKSCache:
    """The last good JWK Set, refreshed after `cache_seconds`, refetched once for an unknown `kid`.

    Fetches are single-flight and rate-limited by `refetch_cooldown_seconds` (measured on the
    injected clock), so a flood of tokens with random `kid`s costs at most one fetch per cool-down.
    A fetch that fails, times out, is too big or holds no usable key never replaces a good set;
    a stale set keeps serving for up to `max_stale_seconds` past its lifetime while the endpoint
    is down. Nothing from a token (jku, x5u, ...) ever decides what is fetched.
    """

    def __init__(
        self,
        http_client: httpx2.AsyncClient,
        *,
        issuer: str,
        jwks_uri: str | None,
        algorithms: Iterable[str],
        clock: Callable[[], float],
        cache_seconds: float = 300.0,
        refetch_cooldown_seconds: float = 10.0,
        fetch_timeout_seconds: float = 5.0,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        max_stale_seconds: float = 24 * 3600.0,
    ) -> None:
        self._http = http_client
        self._issuer = issuer
        self._jwks_uri = jwks_uri
        self._algorithms = frozenset(algorithms)
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cooldown = refetch_cooldown_seconds
        self._timeout = fetch_timeout_seconds
        self._max_bytes = max_document_bytes
        self._max_stale = max_stale_seconds
        self._keys: _KeySet | None = None
        self._last_attempt: float | None = None
        self._inflight: anyio.Event | None = None
        self.fetch_count = 0  # attempts, for metrics and tests

    @property
    def ready(self) -> bool:
        """True once a key set has been loaded (it may since have gone stale)."""
        return self._keys is not None

    async def refresh(self) -> bool:
        """Fetch now, ignoring the cool-down (start-up prefetch); True if a new set was installed."""
        if self._inflight is not None:
            await self._inflight.wait()
            return self._keys is not None
        return await self._fetch_single_flight()

    async def get_key(self, kid: str | None, alg: str) -> VerificationKey:
        """The key that may verify a token with this `kid` and `alg`, or the error to answer with."""
        keys = self._keys
        if keys is None:
            await self._refetch()
        elif self._clock() - keys.fetched_at >= self._cache_seconds and self._inflight is None:
            # Stale: this caller refreshes; concurrent callers keep using the stale set meanwhile.
            await self._refetch()
        keys = self._keys
        if keys is None:
            # Cold start with the JWKS endpoint down: fail closed, but as "unavailable", not as a
            # verdict on the client's token.
            raise AuthUnavailable("the authorization server's signing keys are not available")
        if self._clock() - keys.fetched_at > self._cache_seconds + self._max_stale:
            raise AuthUnavailable("the authorization server's signing keys could not be refreshed")

        candidates = keys.candidates(kid, alg)
        if candidates is None:
            # RFC 7517 §4.5 + key rotation: an unknown kid may be a new key; look once, rate-limited.
            await self._refetch()
            keys = self._keys
            candidates = keys.candidates(kid, alg) if keys is not None else None
        if candidates is None:
            raise InvalidToken("the token was signed with an unknown key")
        if len(candidates) != 1:
            # Zero: the key exists but not for this algorithm (algorithm confusion). Several: ambiguous.
            raise InvalidToken("the token's algorithm is not allowed for its key")
        return candidates[0]

    async def _refetch(self) -> None:
        """Join the fetch in flight, or start one unless the cool-down forbids it."""
        if self._inflight is not None:
            await self._inflight.wait()
            return
        if self._last_attempt is not None and self._clock() < self._last_attempt + self._cooldown:
            return
        await self._fetch_single_flight()

    async def _fetch_single_flight(self) -> bool:
        done = anyio.Event()
        self._inflight = done
        self._last_attempt = self._clock()
        self.fetch_count += 1
        try:
            return await self._fetch_and_install()
        finally:
            self._inflight = None
            done.set()

    async def _fetch_and_install(self) -> bool:
        try:
            with anyio.fail_after(self._timeout):
                jwks_uri = self._jwks_uri or await self._discover()
                document = await self._get_json(jwks_uri)
            key_set = _parse_jwks(document, self._algorithms, fetched_at=self._clock())
        except Exception as exc:  # network, timeout, size, JSON or key-set failure: keep what we have
            logger.warning("JWKS refresh for %s failed (%s); keeping the previous key set", self._issuer, _why(exc))
            return False
        self._keys = key_set
        self._jwks_uri = jwks_uri
        return True

    async def _discover(self) -> str:
        for url in metadata_urls(self._issuer):
            try:
                metadata = await self._get_json(url)
            except _FetchFailed:
                continue
            # RFC 8414 §3.3: metadata whose issuer differs from the issuer used to build the URL
            # "MUST NOT be used".
            if not isinstance(metadata, dict) or metadata.get("issuer") != self._issuer:
                continue
            jwks_uri = metadata.get("jwks_uri")
            if isinstance(jwks_uri, str) and _acceptable_jwks_uri(jwks_uri):
                return jwks_uri
        raise _FetchFailed("no usable authorization server metadata")

    async def _get_json(self, url: str) -> object:
        headers = {"accept": "application/json", "accept-encoding": "identity"}
        timeout = httpx2.Timeout(self._timeout)
        async with self._http.stream("GET", url, headers=headers, follow_redirects=False, timeout=timeout) as response:
            if response.status_code != 200:
                raise _FetchFailed(f"HTTP {response.status_code}")
            # Raw bytes only: a compressed body could expand far past the cap before we count it.
            if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
                raise _FetchFailed("compressed response")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise _FetchFailed("response too large")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self._max_bytes:
                    raise _FetchFailed("response too large")
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise _FetchFailed("not JSON") from exc


def _acceptable_jwks_uri(uri: str) -> bool:
    # RFC 8414 §2 jwks_uri; keys must come over TLS unless the issuer is on this machine.
    parts = urlsplit(uri)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON constant {name}")


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]
