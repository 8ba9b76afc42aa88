"""Upstream tokens from an authorization server: OAuth client credentials and RFC 8693 token exchange."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from mcp_gateway.config import ServerEntry
from mcp_gateway.credentials.cache import TokenCache
from mcp_gateway.credentials.endpoint import FetchedToken, TokenEndpoint
from mcp_gateway.credentials.source import CredentialContext, CredentialRequest, CredentialUse, IssuedCredential
from mcp_gateway.errors import UpstreamCredentialError

_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class _AuthorizationServerSource:
    """What both grants share: the token endpoint, the cache, the scope rule and how a token is sent."""

    def __init__(self, entry: ServerEntry, env: Mapping[str, str], context: CredentialContext) -> None:
        credentials = entry.credentials
        assert credentials is not None
        self.kind = credentials.type
        self.server = entry.name
        self.audience = credentials.audience or entry.url
        self.resource = credentials.resource or entry.url  # RFC 8707: the token is good for this upstream only
        self.endpoint = TokenEndpoint(entry.name, credentials, env, context, entry.url)
        self.endpoint.pinned_authorization_server = entry.authorization_server
        self.cache = TokenCache(context.clock, margin=credentials.refresh_before_seconds)
        self.clock = context.clock
        self.scope = credentials.scope

    def scopes(self, request: CredentialRequest, *, operation_default: bool) -> tuple[str, ...]:
        """The scopes to ask for: exactly the operation's (`scope = "operation"`), a fixed list, or none."""
        if self.scope == "operation" or (self.scope is None and operation_default):
            return tuple(sorted(set(request.scopes)))
        return tuple(self.scope or ())

    def issued(self, token: FetchedToken, asked: tuple[str, ...]) -> IssuedCredential:
        use = CredentialUse(
            self.kind, token.token_id, token.scope or asked, max(0, int(token.expires_at - self.clock()))
        )
        value = token.access_token.encode("latin-1")
        return IssuedCredential(((b"authorization", b"Bearer " + value),), (value,), use)

    def key_of(self, request: CredentialRequest) -> Hashable:
        raise NotImplementedError

    async def rejected(self, request: CredentialRequest, credential: IssuedCredential, status: int) -> bool:
        # RFC 6750 §3.1: a 401 invalid_token may be an expired or revoked token: drop it, and a retry fetches a
        # fresh one (once: the exchange never asks twice for one request).
        if status != 401 or credential.use is None or credential.use.token_id is None:
            return False
        return self.cache.invalidate(self.key_of(request), credential.use.token_id)

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return self.endpoint.secrets

    async def aclose(self) -> None:
        return None


class ClientCredentialsSource(_AuthorizationServerSource):
    """`type = "oauth_client_credentials"`: the gateway's own token for the upstream (RFC 6749 §4.4)."""

    def key_of(self, request: CredentialRequest) -> Hashable:
        return self.scopes(request, operation_default=False)

    async def issue(self, request: CredentialRequest) -> IssuedCredential:
        scopes = self.scopes(request, operation_default=False)
        token = await self.cache.get(scopes, lambda: self._fetch(scopes))
        return self.issued(token, scopes)

    async def _fetch(self, scopes: tuple[str, ...]) -> FetchedToken:
        form = {"grant_type": "client_credentials", "resource": self.resource}
        if scopes:
            form["scope"] = " ".join(scopes)
        return await self.endpoint.request(form)


class TokenExchangeSource(_AuthorizationServerSource):
    """`type = "token_exchange"` (RFC 8693): the client's token exchanged for one good for this upstream only.

    The gateway authenticates as itself; the issued token names the delegating user as `sub` and the agent in
    `act`. Tokens are cached per (issuer, subject, agent, scopes), never past the client token's own expiry.
    """

    def key_of(self, request: CredentialRequest) -> Hashable:
        principal = request.principal
        assert principal is not None
        scopes = self.scopes(request, operation_default=True)
        return (principal.issuer, principal.delegating_user or principal.subject, principal.agent_id, scopes)

    async def issue(self, request: CredentialRequest) -> IssuedCredential:
        subject_token, principal = request.subject_token, request.principal
        if subject_token is None or principal is None:
            raise UpstreamCredentialError(
                self.server, self.kind, "no_subject_token", "there is no client token to exchange"
            )
        scopes = self.scopes(request, operation_default=True)
        key = self.key_of(request)
        token = await self.cache.get(key, lambda: self._fetch(subject_token, scopes), cap=principal.expires_at)
        return self.issued(token, scopes)

    async def _fetch(self, subject_token: str, scopes: tuple[str, ...]) -> FetchedToken:
        form = {
            "grant_type": _TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": _ACCESS_TOKEN_TYPE,
            "requested_token_type": _ACCESS_TOKEN_TYPE,
            "audience": self.audience,
            "resource": self.resource,
        }
        if scopes:
            form["scope"] = " ".join(scopes)
        return await self.endpoint.request(form)
