"""Verifying a JWS-compact access token (RFC 9068) against the issuer's JWKS, trusting nothing in it first."""

from __future__ import annotations

import binascii
import json
import re
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Iterable

from mcp_gateway.auth.claims import principal_from_claims
from mcp_gateway.auth.jwks import JWKSCache
from mcp_gateway.auth.principal import Principal
from mcp_gateway.errors import InvalidToken

# RFC 7515 §2 / §7.1: base64url without padding. Anything else (padding, '+', '/', whitespace) is refused.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# Header parameters that point at key material elsewhere (RFC 7515 §4.1.2-§4.1.6). We never follow
# or trust them; a token carrying them is refused outright, so no code path can start to.
_KEY_POINTERS = frozenset({"jku", "jwk", "x5u", "x5c"})
_MAX_KID_LENGTH = 256
# RFC 9068 §2.1 / §4: access tokens are typed "at+jwt". Many issuers still write "JWT" (or nothing), so
# those pass unless `require_access_token_typ`; any other type (a DPoP proof, a logout token, an ID-JAG...)
# is a different kind of JWT and never an access token here (RFC 8725 §3.11 explicit typing).
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_LEGACY_TYPES = frozenset({"jwt", "application/jwt"})


class JWTVerifier:
    """A `TokenVerifier` for signed JWT access tokens.

    The header is decoded and checked before any key is looked up or any signature computed; the
    signature is checked with pyjwt's algorithm implementation for the one algorithm the header
    names, after confirming that the key's type allows it. pyjwt's own claim checks are not used:
    claims are judged by `principal_from_claims`, so there is exactly one set of claim rules.
    """

    def __init__(
        self,
        jwks: JWKSCache,
        *,
        issuer: str,
        algorithms: Iterable[str],
        clock: Callable[[], float],
        leeway: int = 60,
        max_lifetime: int = 3600,
        max_token_bytes: int = 8192,
        accept_scp: bool = False,
        require_access_token_typ: bool = False,
    ) -> None:
        self._jwks = jwks
        self._issuer = issuer
        self._algorithms = frozenset(algorithms)
        self._clock = clock
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._max_token_bytes = max_token_bytes
        self._accept_scp = accept_scp
        self._require_typ = require_access_token_typ

    @property
    def ready(self) -> bool:
        return self._jwks.ready

    async def start(self) -> None:
        """Prefetch the JWKS; if that fails the verifier stays not ready and refuses every token."""
        await self._jwks.refresh()

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever injected it."""

    def _acceptable_type(self, typ: object) -> bool:
        if typ is None:
            return not self._require_typ
        if not isinstance(typ, str):
            return False
        typ = typ.lower()  # RFC 7515 §4.1.9: a media type, compared case-insensitively
        return typ in _ACCESS_TOKEN_TYPES or (not self._require_typ and typ in _LEGACY_TYPES)

    async def verify(self, token: str, *, resource: str) -> Principal:
        # Size first: nothing below runs on an oversized input.
        if len(token) > self._max_token_bytes:
            raise InvalidToken("the access token is too large")
        segments = token.split(".")
        if len(segments) == 5:
            # RFC 7516 §7.1: five segments is a JWE. Refused as is; nothing is decrypted or inflated.
            raise InvalidToken("encrypted tokens are not accepted")
        if len(segments) != 3:
            raise InvalidToken("the access token is malformed")
        header_b64, payload_b64, signature_b64 = segments
        header = _json_object(_b64decode(header_b64))
        payload = _b64decode(payload_b64)
        signature = _b64decode(signature_b64)
        alg = _check_header(header, self._algorithms)
        if not self._acceptable_type(header.get("typ")):
            raise InvalidToken("the token is not an access token")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID_LENGTH):
            raise InvalidToken("the token's key id is malformed")

        key = await self._jwks.get_key(kid, alg)
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        try:
            valid = key.verify(alg, signing_input, signature)
        except Exception:  # e.g. a wrong-length signature that a backend rejects with ValueError
            valid = False
        if not valid:
            raise InvalidToken("the token's signature is not valid")

        # Only now, with the signature checked, is the payload parsed.
        claims = _json_object(payload)
        return principal_from_claims(
            claims,
            token=token,
            issuer=self._issuer,
            resource=resource,
            now=self._clock(),
            leeway=self._leeway,
            max_lifetime=self._max_lifetime,
            accept_scp=self._accept_scp,
        )


def _check_header(header: dict[str, object], allowed: frozenset[str]) -> str:
    """The header's `alg` if the header is acceptable; InvalidToken otherwise (RFC 8725 §3.1, §3.2)."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidToken("the token's algorithm is missing")
    # RFC 8725 §3.1 / §2.1: never "none" (in any capitalisation) and never an HMAC algorithm at a
    # resource server holding only public keys; then only what is configured, compared exactly.
    if alg.lower() == "none" or alg.upper().startswith("HS") or alg not in allowed:
        raise InvalidToken("the token's algorithm is not accepted")
    # RFC 7515 §4.1.11: a recipient MUST reject a token whose `crit` lists an extension it does not
    # understand. We understand none (RFC 7797 `b64` has no place in a JWT), so `crit` is refused.
    if "crit" in header or "b64" in header:
        raise InvalidToken("the token uses an unsupported critical header extension")
    if _KEY_POINTERS & header.keys():
        raise InvalidToken("the token names its own key material, which is never trusted")
    return alg


def _b64decode(segment: str) -> bytes:
    if _BASE64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise InvalidToken("the access token is malformed")
    try:
        decoded = urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("the access token is malformed") from None
    # Canonical encodings only (non-zero trailing bits are refused), so one token has one spelling.
    if urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise InvalidToken("the access token is malformed")
    return decoded


def _json_object(data: bytes) -> dict[str, object]:
    try:
        value = json.loads(data, object_pairs_hook=_unique_members, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidToken("the access token is malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("the access token is malformed")
    return value


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # RFC 7515 §5.2 / RFC 7519 §4: duplicate member names are rejected, not resolved.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _reject_constant(name: str) -> object:
    # NaN and Infinity are not JSON (RFC 8259 §6); Python's decoder accepts them unless told not to.
    raise ValueError(f"non-standard JSON constant {name}")
