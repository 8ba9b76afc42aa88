"""Signed assertions: the gateway as the upstream's issuer, minting a short JWT for each call."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import jwt

from mcp_gateway.config import ServerEntry
from mcp_gateway.credentials.files import WatchedFile, resolve_path
from mcp_gateway.credentials.keys import SigningKey, parse_signing_key
from mcp_gateway.credentials.source import CredentialContext, CredentialRequest, CredentialUse, IssuedCredential


def assertion_claims(
    *,
    issuer: str,
    audience: str,
    request: CredentialRequest,
    scopes: tuple[str, ...],
    now: int,
    lifetime: int,
    jti: str,
) -> dict[str, object]:
    """The claims of one assertion (pure): `sub` the delegating user, `act` the agent (RFC 8693 §4.1)."""
    principal = request.principal
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,  # at most 60 s (the config caps lifetime_seconds)
        "jti": jti,
        "scope": " ".join(scopes),
    }
    if principal is not None:
        claims["sub"] = principal.delegating_user or principal.agent_id
        claims["act"] = {"sub": principal.agent_id}
        claims["client_id"] = principal.agent_id
    else:
        claims["sub"] = issuer  # the gateway answering on its own behalf (a refused server-to-client request)
    return claims


class SignedAssertionSource:
    """`type = "signed_assertion"`: a fresh ES256 JWT per call, for upstreams that trust the gateway as issuer.

    The key file is re-read when it changes: the new key signs from then on, and the old one stays in the
    published JWK Set until the last assertion it signed has expired (`lifetime_seconds` later).
    """

    def __init__(self, entry: ServerEntry, env: Mapping[str, str], context: CredentialContext) -> None:
        credentials = entry.credentials
        assert credentials is not None and credentials.private_key_file is not None
        self.server = entry.name
        self.issuer = context.public_url
        self.audience = credentials.audience or entry.url
        self.scope = credentials.scope
        self.lifetime = credentials.lifetime_seconds
        self.clock = context.clock
        self.keys = context.signing_keys
        path = resolve_path(context.base_dir, credentials.private_key_file)
        key_name = f"servers.{entry.name}.credentials.private_key_file"
        self._key = WatchedFile(
            path, lambda pem: parse_signing_key(pem, allow_rsa=False), file="server_allowlist.toml", key=key_name
        )
        self._signing = self._key.value
        self.keys.publish(self._signing.kid, self._signing.public_jwk, None)

    def _current_key(self) -> SigningKey:
        key = self._key.current()
        if key.kid != self._signing.kid:
            # Rotation: the retired key stays published while an assertion it signed can still be presented.
            retired = self._signing
            self.keys.publish(retired.kid, retired.public_jwk, self.clock() + self.lifetime + 1)
            self.keys.publish(key.kid, key.public_jwk, None)
            self._signing = key
        return key

    async def issue(self, request: CredentialRequest) -> IssuedCredential:
        key = self._current_key()
        now = int(self.clock())
        scopes = tuple(self.scope) if isinstance(self.scope, tuple) else tuple(sorted(set(request.scopes)))
        jti = secrets.token_urlsafe(16)
        claims = assertion_claims(
            issuer=self.issuer, audience=self.audience, request=request, scopes=scopes, now=now,
            lifetime=self.lifetime, jti=jti,
        )  # fmt: skip
        headers = {"kid": key.kid, "typ": "at+jwt"}  # RFC 9068 §2.1: an access token, not an ID token
        token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)
        value = token.encode("ascii")
        use = CredentialUse("signed_assertion", jti, scopes, self.lifetime)
        return IssuedCredential(((b"authorization", b"Bearer " + value),), (value,), use)

    async def rejected(self, request: CredentialRequest, credential: IssuedCredential, status: int) -> bool:
        return False  # a fresh assertion from the same key says the same; the upstream does not trust it

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return ()

    async def aclose(self) -> None:
        return None
