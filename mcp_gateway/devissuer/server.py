"""A local OAuth 2.1 authorization server for demos and tests: client credentials and token exchange. DEV ONLY."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_gateway.devissuer.config import IssuerClient, IssuerConfig
from mcp_gateway.devissuer.exchange import ACCESS_TOKEN_TYPE, exchange_token
from mcp_gateway.devissuer.tokens import IssuedToken, TokenRequestError

__all__ = [
    "IssuedToken",
    "TokenRequestError",
    "authorization_server_metadata",
    "create_issuer_app",
    "issue_token",
    "mint_token",
]

logger = logging.getLogger(__name__)

_MAX_FORM_BYTES = 16 * 1024
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
# RFC 6749 §5.1: token responses "MUST" carry these so no cache keeps a token.
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_BASIC_CHALLENGE = 'Basic realm="mcp-gateway development issuer", charset="UTF-8"'


def issue_token(
    config: IssuerConfig, client_id: str, *, scopes: Sequence[str] | None, resource: str | None, now: float
) -> IssuedToken:
    """Mint an RFC 9068 JWT access token for an (already authenticated) client."""
    client = config.settings.clients.get(client_id)
    if client is None:
        raise TokenRequestError("invalid_client", "unknown client", status_code=401)
    granted = _granted_scopes(client, scopes)
    audience = _audience(client, resource)
    issued_at = int(now)
    lifetime = config.settings.token_lifetime_seconds
    claims = {
        "iss": config.issuer,
        "sub": client.sub or client_id,
        "aud": audience,
        "exp": issued_at + lifetime,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "scope": " ".join(granted),
    }
    key = config.key
    # RFC 9068 §2.1: typ "at+jwt" marks this as an access token, not an ID token.
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "at+jwt"})
    return IssuedToken(access_token=token, scope=" ".join(granted), expires_in=lifetime)


def mint_token(config: IssuerConfig, client_id: str, *, scopes: Sequence[str] | None, resource: str, now: float) -> str:
    """The token `issue_token` would grant, for the `mcp-gateway token` command."""
    return issue_token(config, client_id, scopes=scopes, resource=resource, now=now).access_token


def authorization_server_metadata(config: IssuerConfig) -> dict[str, object]:
    """RFC 8414 §2 metadata."""
    scopes = sorted({scope for client in config.settings.clients.values() for scope in client.scopes})
    return {
        "issuer": config.issuer,
        # RFC 8414 §2 makes this optional when no grant uses it, but the MCP SDK's metadata model
        # requires it; the endpoint exists and refuses every request (no response type is supported).
        "authorization_endpoint": config.endpoint("/authorize"),
        "token_endpoint": config.endpoint("/token"),
        "jwks_uri": config.endpoint("/jwks.json"),
        "response_types_supported": [],
        # RFC 8693 is advertised only when some client may exchange tokens at all.
        "grant_types_supported": ["client_credentials"]
        + ([_TOKEN_EXCHANGE] if any(c.may_exchange for c in config.settings.clients.values()) else []),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
    }


def create_issuer_app(config: IssuerConfig, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The issuer as an ASGI app; routes live under the issuer URL's path (RFC 8414 §3.1 for metadata)."""
    prefix = urlsplit(config.issuer).path.rstrip("/")
    metadata = authorization_server_metadata(config)
    jwks = {"keys": [dict(config.key.public_jwk)]}

    async def metadata_endpoint(request: Request) -> Response:
        return JSONResponse(metadata)

    async def jwks_endpoint(request: Request) -> Response:
        return JSONResponse(jwks, headers={"cache-control": "max-age=300"})

    async def authorize_endpoint(request: Request) -> Response:
        return _error_response(TokenRequestError("unsupported_response_type", "only client_credentials is supported"))

    async def token_endpoint(request: Request) -> Response:
        try:
            form = await _read_form(request)
            client_id = _authenticate(config, request, form)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise TokenRequestError("invalid_request", "grant_type is required")
            extra: dict[str, str] = {}
            if grant_type == _TOKEN_EXCHANGE:
                issued = exchange_token(config, client_id, form, now=clock())
                extra["issued_token_type"] = ACCESS_TOKEN_TYPE  # RFC 8693 §2.2.1
            elif grant_type != "client_credentials":
                raise TokenRequestError("unsupported_grant_type", "only client_credentials and token exchange")
            else:
                scope = form.get("scope")
                issued = issue_token(
                    config,
                    client_id,
                    scopes=scope.split(" ") if scope else None,
                    resource=form.get("resource"),
                    now=clock(),
                )
        except TokenRequestError as exc:
            return _error_response(exc)
        body = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
            **extra,
        }
        return JSONResponse(body, headers=_NO_STORE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.warning(
            "DEVELOPMENT ONLY: the mcp-gateway local issuer at %s mints tokens for anyone holding a "
            "client secret from its config file; never expose it or use it in production",
            config.issuer,
        )
        yield

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server" + prefix, metadata_endpoint, methods=["GET"]),
            Route(prefix + "/jwks.json", jwks_endpoint, methods=["GET"]),
            Route(prefix + "/authorize", authorize_endpoint, methods=["GET", "POST"]),
            Route(prefix + "/token", token_endpoint, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def _granted_scopes(client: IssuerClient, requested: Sequence[str] | None) -> tuple[str, ...]:
    # RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
    wanted = [scope for scope in requested or () if scope]
    if not wanted:
        # RFC 6749 §3.3: with `scope` omitted the server "MUST either process the request using a
        # pre-defined default value or fail"; the default is the client's `default_scopes`.
        return client.granted_by_default()
    if any(_SCOPE_TOKEN.fullmatch(scope) is None for scope in wanted):
        raise TokenRequestError("invalid_scope", "the requested scope is malformed")
    if not set(wanted) <= set(client.scopes):
        # RFC 6749 §5.2 invalid_scope: "exceeds the scope granted by the resource owner".
        raise TokenRequestError("invalid_scope", "the requested scope exceeds what this client may request")
    return tuple(dict.fromkeys(wanted))


def _audience(client: IssuerClient, resource: str | None) -> str:
    # RFC 8707 §2: the resource must be an absolute URI without a fragment. We require it, so every
    # token is audience-restricted to exactly one resource (invalid_target covers "missing").
    if not resource:
        raise TokenRequestError("invalid_target", "the resource parameter is required (RFC 8707)")
    parts = urlsplit(resource)
    if not parts.scheme or not parts.netloc or parts.fragment or "#" in resource:
        raise TokenRequestError("invalid_target", "resource must be an absolute URI without a fragment")
    if client.resources and resource not in client.resources:
        raise TokenRequestError("invalid_target", "this client may not request tokens for that resource")
    return resource


async def _read_form(request: Request) -> dict[str, str]:
    # RFC 6749 §4.4.2 / §3.2: application/x-www-form-urlencoded, each parameter at most once.
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise TokenRequestError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise TokenRequestError("invalid_request", "the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise TokenRequestError("invalid_request", "the request body is malformed") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            if name == "resource":  # RFC 8707 allows several; this issuer issues one audience per token
                raise TokenRequestError("invalid_target", "request one resource per token")
            raise TokenRequestError("invalid_request", f"the {name} parameter is repeated")
        form[name] = value
    return form


def _authenticate(config: IssuerConfig, request: Request, form: dict[str, str]) -> str:
    """RFC 6749 §2.3.1: client_secret_basic or client_secret_post, never both; the client id on success."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if "client_secret" in form:
            raise TokenRequestError("invalid_request", "use one client authentication method, not two")
        client_id, secret = _basic_credentials(authorization)
        if "client_id" in form and form["client_id"] != client_id:
            raise TokenRequestError("invalid_request", "client_id does not match the credentials")
        challenge = True
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        challenge = False
    client = config.settings.clients.get(client_id)
    # Compare even for an unknown client, so the answer takes the same time either way.
    valid = (client or _UNKNOWN_CLIENT).secret_matches(secret) and client is not None and bool(secret)
    if not valid:
        raise _invalid_client(challenge)
    return client_id


_UNKNOWN_CLIENT = IssuerClient(secret_sha256="0" * 64)


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client(True)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client(True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client(True)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before being joined.
    return unquote_plus(client_id), unquote_plus(secret)


def _invalid_client(challenge: bool) -> TokenRequestError:
    # RFC 6749 §5.2: 401, with WWW-Authenticate when the client tried the Authorization header.
    return TokenRequestError(
        "invalid_client",
        "client authentication failed",
        status_code=401,
        www_authenticate=_BASIC_CHALLENGE if challenge else None,
    )


def _error_response(exc: TokenRequestError) -> Response:
    headers = dict(_NO_STORE)
    if exc.www_authenticate is not None:
        headers["www-authenticate"] = exc.www_authenticate
    return JSONResponse({"error": exc.error, "error_description": exc.description}, exc.status_code, headers)
