"""The credential seam: what every upstream credential provider promises the request pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mcp_gateway.auth.principal import Principal

if TYPE_CHECKING:  # only the type: building a client is the application's business
    import httpx2

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """What a provider may base one upstream credential on: who asked, for what, and where it goes.

    `scopes` are exactly the scopes the gateway's policy required for this operation, so that a provider
    can narrow the downstream token to the one operation being called (`scope = "operation"`).
    `subject_token` is the client's own verified token: only a token-exchange provider may use it, as the
    RFC 8693 `subject_token`; it is never sent upstream as it is (MCP authorization §Token Passthrough).
    """

    server: str
    upstream_url: str
    principal: Principal | None
    method: str | None
    name: str | None
    scopes: tuple[str, ...]
    subject_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CredentialUse:
    """What the audit records about the credential one request carried (`upstream_credential`): never a secret.

    `token_id` is the token's `jti`, or `sha256:` of its value when it has none; `expires_in` is whole
    seconds left when it was sent (None: it does not expire, as a static secret).
    """

    type: str
    token_id: str | None = None
    scope: tuple[str, ...] = ()
    expires_in: int | None = None

    def to_json(self) -> str:
        """The audit field's JSON text, keys sorted."""
        value = {"expires_in": self.expires_in, "scope": list(self.scope), "token_id": self.token_id, "type": self.type}
        return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """The credential for one upstream request: its headers, the secrets in them, and its audit description.

    `secrets` are redacted from everything the upstream answers to this request, however long that answer
    streams: a value that was rotated out meanwhile stays redacted as long as a request that carried it lives.
    """

    headers: tuple[Header, ...] = ()
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    use: CredentialUse | None = None


NO_CREDENTIAL = IssuedCredential()


class CredentialSource(Protocol):
    """Issues the credential one upstream request carries, and learns when the upstream refused it.

    `issue` may await (a provider may fetch a token) and raises `UpstreamCredentialError` when it cannot
    get one; `rejected` is called at most once per request, when the upstream answered 401 to `credential`,
    and returns True only if a retry with a fresh credential could succeed (the exchange then retries the
    request once, never in a loop); `secrets` are the provider's own long-lived secrets (a client secret),
    redacted from every upstream answer besides the per-request ones.
    """

    async def issue(self, request: CredentialRequest) -> IssuedCredential: ...

    async def rejected(self, request: CredentialRequest, credential: IssuedCredential, status: int) -> bool: ...

    @property
    def secrets(self) -> tuple[bytes, ...]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CredentialContext:
    """What building a provider may need beyond its config table, passed explicitly (CONVENTIONS).

    `http_client` reaches token endpoints and metadata (never redirected); `clock` is epoch seconds, injected
    so that expiry and cache margins are testable; `base_dir` resolves relative key and token file paths;
    `public_url` is the gateway's own issuer identifier for signed assertions; `signing_keys` collects the
    keys that `GET /.well-known/jwks.json` publishes.
    """

    http_client: Callable[[], httpx2.AsyncClient]
    clock: Callable[[], float]
    base_dir: str
    public_url: str
    signing_keys: SigningKeyRing


class SigningKeyRing(Protocol):
    """Where signed-assertion providers publish their public keys (see `credentials.keys.PublishedKeys`)."""

    def publish(self, kid: str, jwk: dict[str, str], until: float | None) -> None: ...


class NoCredential:
    """An upstream that gets no credential from the gateway (no `[credentials]` table)."""

    async def issue(self, request: CredentialRequest) -> IssuedCredential:
        return NO_CREDENTIAL

    async def rejected(self, request: CredentialRequest, credential: IssuedCredential, status: int) -> bool:
        return False

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return ()

    async def aclose(self) -> None:
        return None
