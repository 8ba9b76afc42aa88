"""The gateway as an OAuth client: its token endpoint (configured or discovered) and how it authenticates there."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2
import jwt

from mcp_gateway.config import Credentials, is_loopback
from mcp_gateway.credentials.files import WatchedFile, env_secret, resolve_path, secret_text
from mcp_gateway.credentials.keys import SigningKey, parse_signing_key
from mcp_gateway.credentials.source import CredentialContext
from mcp_gateway.errors import UpstreamCredentialError

logger = logging.getLogger("mcp_gateway.credentials")

_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_MAX_BODY = 64 * 1024
# A token without `expires_in` (RFC 6749 §5.1: only RECOMMENDED) is kept this long, then fetched again.
DEFAULT_LIFETIME = 60


@dataclass(frozen=True, slots=True)
class FetchedToken:
    """An access token from a token endpoint and what the gateway knows about it."""

    access_token: str = field(repr=False)
    expires_at: float
    scope: tuple[str, ...]
    token_id: str  # its `jti` when it is a JWT that names one, else the SHA-256 of its value


def token_id(token: str) -> str:
    """How a record names an access token: its `jti` if it is a JWT carrying one, else `sha256:` of it.

    Reading the payload unverified is fine here: the value only labels an audit record; the upstream verifies.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        claims = {}
    jti = claims.get("jti") if isinstance(claims, dict) else None
    if isinstance(jti, str) and 0 < len(jti) <= 256 and jti.isprintable():
        return jti
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenEndpoint:
    """Posts token requests for one upstream's credential and turns every failure into UpstreamCredentialError."""

    def __init__(
        self, server: str, credentials: Credentials, env: Mapping[str, str], context: CredentialContext, upstream: str
    ) -> None:
        self.server = server
        self.kind = credentials.type
        self.client_id = credentials.client_id or ""
        self.method = credentials.method
        self.timeout = credentials.timeout_seconds
        self.upstream = upstream
        self.pinned_authorization_server: str | None = None
        self._context = context
        self._token_url = credentials.token_url
        self._issuer: str | None = None
        prefix = f"servers.{server}.credentials"
        self._secret_env: str | None = None
        self._secret_file: WatchedFile[str] | None = None
        self._key: WatchedFile[SigningKey] | None = None
        if credentials.client_secret_env is not None:
            self._secret_env = env_secret(env, credentials.client_secret_env, key=f"{prefix}.client_secret_env")
        elif credentials.client_secret_file is not None:
            path = resolve_path(context.base_dir, credentials.client_secret_file)
            self._secret_file = WatchedFile(
                path, secret_text, file="server_allowlist.toml", key=f"{prefix}.client_secret_file"
            )
        if self.method == "private_key_jwt":
            assert credentials.private_key_file is not None  # the config model requires it
            path = resolve_path(context.base_dir, credentials.private_key_file)
            self._key = WatchedFile(
                path, lambda pem: parse_signing_key(pem, allow_rsa=True), file="server_allowlist.toml",
                key=f"{prefix}.private_key_file",
            )  # fmt: skip

    @property
    def secrets(self) -> tuple[bytes, ...]:
        if self._secret_env is not None:
            return (self._secret_env.encode(),)
        if self._secret_file is not None:
            previous = self._secret_file.previous
            return (self._secret_file.value.encode(), *((previous.encode(),) if previous else ()))
        return ()

    def failure(self, reason: str, why: str) -> UpstreamCredentialError:
        logger.warning("upstream credential for %s (%s) failed: %s", self.server, self.kind, why)
        return UpstreamCredentialError(self.server, self.kind, reason, why)

    async def request(self, form: dict[str, str]) -> FetchedToken:
        """One token request (RFC 6749 §3.2) with the gateway's client authentication; the parsed answer."""
        url = await self.token_url()
        body = dict(form)
        headers = {"accept": "application/json"}
        if self.method == "client_secret_basic":
            # RFC 6749 §2.3.1: each part form-urlencoded, then joined and base64-encoded.
            pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret(), safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif self.method == "client_secret_post":
            body.update(client_id=self.client_id, client_secret=self._client_secret())
        else:
            body.update(
                client_id=self.client_id, client_assertion_type=_JWT_BEARER, client_assertion=self._assertion(url)
            )
        try:
            response = await self._context.http_client().post(
                url, data=body, headers=headers, timeout=self.timeout, follow_redirects=False
            )
        except httpx2.HTTPError as exc:
            raise self.failure(
                "token_endpoint_unreachable", f"the token endpoint {url} could not be reached ({type(exc).__name__})"
            ) from None
        return self._parse(url, response)

    def _client_secret(self) -> str:
        if self._secret_file is not None:
            return self._secret_file.current()
        return self._secret_env or ""

    def _assertion(self, url: str) -> str:
        # RFC 7523 §3: iss = sub = the client id, aud = the authorization server (its issuer identifier when
        # known, else the token endpoint), a short exp and a unique jti so it cannot be replayed.
        assert self._key is not None
        key = self._key.current()
        now = int(self._context.clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self._issuer or url,
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})

    def _parse(self, url: str, response: httpx2.Response) -> FetchedToken:
        status = response.status_code
        data: Any = None
        if len(response.content) <= _MAX_BODY:
            try:
                data = response.json()
            except ValueError:
                data = None
        if status != 200:
            error = data.get("error") if isinstance(data, dict) else None
            # RFC 6749 §5.2: the error code is a fixed token; the description is the server's free text, so
            # only a well-formed code reaches the client's message.
            code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "no error code"
            if 300 <= status < 400:
                raise self.failure("token_endpoint_refused", f"the token endpoint {url} redirected ({status})")
            raise self.failure(
                "token_endpoint_refused", f"the authorization server refused the token request ({status}, {code})"
            )
        if not isinstance(data, dict):
            raise self.failure("token_endpoint_invalid", "the token endpoint answered without a JSON object")
        token, kind, expires_in = data.get("access_token"), data.get("token_type"), data.get("expires_in")
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n\0 "):
            raise self.failure("token_endpoint_invalid", "the token endpoint answered without a usable access_token")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            # RFC 6749 §7.1: a client must not use a token whose type it does not understand.
            raise self.failure("token_endpoint_invalid", "the token endpoint issued a token that is not a Bearer token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = DEFAULT_LIFETIME
        scope = data.get("scope")
        scopes = tuple(scope.split()) if isinstance(scope, str) else ()
        return FetchedToken(token, self._context.clock() + float(expires_in), scopes, token_id(token))

    async def token_url(self) -> str:
        """The configured `token_url`, else the one discovered the MCP way (RFC 9728, then RFC 8414), once."""
        if self._token_url is None:
            self._token_url = await self._discover()
        return self._token_url

    async def _discover(self) -> str:
        parts = urlsplit(self.upstream)
        # RFC 9728 §3.1: the well-known suffix goes between the host and the resource's path.
        metadata_url = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path.rstrip('/')}"
        resource = await self._get_json(metadata_url)
        if resource.get("resource") != self.upstream:
            # RFC 9728 §3.3: the resource MUST be identical to the URL the metadata was derived from.
            raise self.failure("discovery_failed", "the upstream's resource metadata names another resource")
        servers = resource.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
            raise self.failure("discovery_failed", "the upstream's resource metadata names no authorization server")
        issuer = self.pinned_authorization_server or servers[0]
        if issuer not in servers:
            raise self.failure("discovery_failed", "the upstream no longer names its pinned authorization server")
        issuer_parts = urlsplit(issuer)
        if issuer_parts.scheme != "https" and not is_loopback(issuer_parts.hostname or ""):
            raise self.failure("discovery_failed", "the authorization server's issuer is not https")
        as_url = (
            f"{issuer_parts.scheme}://{issuer_parts.netloc}/.well-known/oauth-authorization-server"
            f"{issuer_parts.path.rstrip('/')}"
        )
        metadata = await self._get_json(as_url)
        if metadata.get("issuer") != issuer:
            # RFC 8414 §3.3: the issuer in the metadata MUST be identical to the one it was fetched for.
            raise self.failure("discovery_failed", "the authorization server's metadata names another issuer")
        token_url = metadata.get("token_endpoint")
        if not isinstance(token_url, str) or urlsplit(token_url).scheme not in ("http", "https"):
            raise self.failure("discovery_failed", "the authorization server's metadata has no token_endpoint")
        token_parts = urlsplit(token_url)
        if token_parts.scheme != "https" and not is_loopback(token_parts.hostname or ""):
            raise self.failure("discovery_failed", "the discovered token endpoint is not https")
        self._issuer = issuer
        return token_url

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._context.http_client().get(
                url, headers={"accept": "application/json"}, timeout=self.timeout, follow_redirects=False
            )
        except httpx2.HTTPError as exc:
            raise self.failure("discovery_failed", f"{url} could not be reached ({type(exc).__name__})") from None
        try:
            data = response.json() if response.status_code == 200 and len(response.content) <= _MAX_BODY else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self.failure("discovery_failed", f"{url} answered {response.status_code} without JSON metadata")
        return data
