"""Verifying opaque access tokens by asking the authorization server (RFC 7662 token introspection)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import anyio
import httpx2

from mcp_gateway.auth.claims import principal_from_claims
from mcp_gateway.auth.principal import Principal
from mcp_gateway.errors import AuthUnavailable, InvalidToken

logger = logging.getLogger(__name__)

_MAX_RESPONSE_BYTES = 64 * 1024


@dataclass
class _Flight:
    """One introspection call that concurrent requests carrying the same token share."""

    done: anyio.Event = field(default_factory=anyio.Event)
    claims: dict[str, object] | None = None
    error: InvalidToken | AuthUnavailable | None = None


class IntrospectionVerifier:
    """A `TokenVerifier` that POSTs each token to the introspection endpoint (no caching of its own;
    `build_verifier` wraps it in a `CachingVerifier` bounded by `introspection_cache_seconds`).

    An inactive token is a 401 invalid_token. An endpoint that is down, slow, refuses our
    credentials or answers garbage is `AuthUnavailable` (503): the request is refused, but the
    client is not told its token is bad.
    """

    def __init__(
        self,
        http_client: httpx2.AsyncClient,
        *,
        endpoint: str,
        client_id: str,
        client_secret: str,
        issuer: str,
        clock: Callable[[], float],
        leeway: int = 60,
        max_lifetime: int = 3600,
        max_token_bytes: int = 8192,
        accept_scp: bool = False,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._http = http_client
        self._endpoint = endpoint
        # RFC 7662 §2.1 + RFC 6749 §2.3.1 client_secret_basic: form-encode each part, then Basic.
        credentials = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._issuer = issuer
        self._clock = clock
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._max_token_bytes = max_token_bytes
        self._accept_scp = accept_scp
        self._timeout = timeout_seconds
        self._flights: dict[bytes, _Flight] = {}

    @property
    def ready(self) -> bool:
        return True  # nothing to load up front; an unreachable endpoint shows per request as 503

    async def start(self) -> None:
        """Nothing to prefetch."""

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client belongs to whoever injected it."""

    def __repr__(self) -> str:  # never show the credentials
        return f"IntrospectionVerifier(endpoint={self._endpoint!r})"

    async def verify(self, token: str, *, resource: str) -> Principal:
        if len(token) > self._max_token_bytes:
            raise InvalidToken("the access token is too large")
        claims = await self._introspect_once(token)
        # RFC 7662 §2.2: only `active` is required; everything else is checked as for a JWT, except
        # that a missing `iss` is allowed (the endpoint speaks for its issuer).
        return principal_from_claims(
            claims,
            token=token,
            issuer=self._issuer,
            resource=resource,
            now=self._clock(),
            leeway=self._leeway,
            max_lifetime=self._max_lifetime,
            accept_scp=self._accept_scp,
            require_issuer=False,
        )

    async def _introspect_once(self, token: str) -> dict[str, object]:
        """Single flight per token: a burst of requests with one new token makes one call."""
        digest = hashlib.sha256(token.encode()).digest()
        flight = self._flights.get(digest)
        if flight is None:
            flight = self._flights[digest] = _Flight()
            try:
                flight.claims = await self._introspect(token)
            except (InvalidToken, AuthUnavailable) as exc:
                flight.error = exc
            finally:
                del self._flights[digest]
                flight.done.set()
        else:
            await flight.done.wait()
        if flight.claims is not None:
            return flight.claims
        error = flight.error or AuthUnavailable("token introspection was interrupted")
        raise type(error)(error.message)  # a fresh exception per waiter

    async def _introspect(self, token: str) -> dict[str, object]:
        headers = {
            "authorization": self._authorization,
            "accept": "application/json",
            "accept-encoding": "identity",
        }
        # RFC 7662 §2.1: the token in a form-encoded POST body, never in the URL.
        form = {"token": token, "token_type_hint": "access_token"}
        try:
            with anyio.fail_after(self._timeout):
                async with self._http.stream(
                    "POST", self._endpoint, data=form, headers=headers, follow_redirects=False
                ) as response:
                    status = response.status_code
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) > _MAX_RESPONSE_BYTES:
                            raise AuthUnavailable("token introspection answered with an oversized response")
        except (httpx2.HTTPError, TimeoutError) as exc:
            logger.warning("token introspection at %s failed: %s", self._endpoint, type(exc).__name__)
            raise AuthUnavailable("token introspection is unavailable") from exc
        if status != 200:
            # 401/403 here mean *our* credentials were refused; 5xx means the server is unwell.
            logger.warning("token introspection at %s answered HTTP %d", self._endpoint, status)
            raise AuthUnavailable("token introspection is unavailable")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            logger.warning("token introspection at %s answered something that is not a JSON object", self._endpoint)
            raise AuthUnavailable("token introspection is unavailable")
        # RFC 7662 §2.2: `active` is a boolean; anything but literal true is an inactive token.
        if document.get("active") is not True:
            raise InvalidToken("the token is not active")
        return document
