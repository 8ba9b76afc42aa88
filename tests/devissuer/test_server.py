from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import jwt
import pytest
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_gateway.auth.bearer import bearer_token
from mcp_gateway.auth.verifier import TokenVerifier, build_verifier
from mcp_gateway.config import AuthConfig
from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import TokenRequestError, create_issuer_app, mint_token
from mcp_gateway.errors import AuthError, InvalidToken
from tests.auth._support import FakeClock

from ._support import AGENT_SECRET, BOT_SECRET, ISSUER_URL, HostRouter, write_issuer_toml

pytestmark = pytest.mark.anyio

RESOURCE_ORIGIN = "http://127.0.0.1:9002"
RESOURCE_URL = RESOURCE_ORIGIN + "/mcp"
PRM_URL = RESOURCE_ORIGIN + "/.well-known/oauth-protected-resource/mcp"


@pytest.fixture
def issuer_config(tmp_path: Path) -> IssuerConfig:
    return load_issuer_config(write_issuer_toml(tmp_path))


@pytest.fixture
def issuer_transport(issuer_config: IssuerConfig, clock: FakeClock) -> HostRouter:
    return HostRouter({"127.0.0.1:9001": create_issuer_app(issuer_config, clock=clock)})


@pytest.fixture
async def issuer(issuer_transport: HostRouter) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=issuer_transport, base_url=ISSUER_URL) as client:
        yield client


def gateway_verifier(
    transport: httpx2.AsyncBaseTransport, clock: FakeClock
) -> tuple[TokenVerifier, httpx2.AsyncClient]:
    """How the gateway would verify this issuer's tokens: discovery (RFC 8414) → JWKS → JWT checks."""
    client = httpx2.AsyncClient(transport=transport)
    config = AuthConfig(issuer=ISSUER_URL, jwks_uri=None, algorithms=("ES256", "RS256"))
    return build_verifier(config, http_client=client, clock=clock), client


def basic(client_id: str, secret: str) -> dict[str, str]:
    credentials = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"authorization": "Basic " + base64.b64encode(credentials).decode()}


async def post_token(
    issuer: httpx2.AsyncClient, data: dict[str, str], headers: dict[str, str] | None = None
) -> httpx2.Response:
    with anyio.fail_after(5):
        return await issuer.post("/token", data=data, headers=headers)


# --- metadata and keys -------------------------------------------------------------------------------


async def test_rfc8414_metadata_describes_a_client_credentials_only_server(issuer: httpx2.AsyncClient) -> None:
    response = await issuer.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == ISSUER_URL
    assert metadata["token_endpoint"] == ISSUER_URL + "/token"
    assert metadata["jwks_uri"] == ISSUER_URL + "/jwks.json"
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert metadata["scopes_supported"] == ["admin", "tools:call", "tools:read"]
    OAuthMetadata.model_validate(metadata)  # the MCP SDK can read it


async def test_an_issuer_with_a_path_serves_metadata_at_the_rfc8414_inserted_well_known_url(tmp_path: Path) -> None:
    config = load_issuer_config(write_issuer_toml(tmp_path, issuer=ISSUER_URL + "/tenant"))
    transport = HostRouter({"127.0.0.1:9001": create_issuer_app(config)})
    async with httpx2.AsyncClient(transport=transport, base_url=ISSUER_URL) as client:
        metadata = (await client.get("/.well-known/oauth-authorization-server/tenant")).json()
        assert metadata["token_endpoint"] == ISSUER_URL + "/tenant/token"
        assert (await client.get("/tenant/jwks.json")).status_code == 200


async def test_the_jwks_publishes_only_the_public_signing_key(
    issuer: httpx2.AsyncClient, issuer_config: IssuerConfig
) -> None:
    [key] = (await issuer.get("/jwks.json")).json()["keys"]
    assert key["kid"] == issuer_config.key.kid
    assert (key["use"], key["alg"], key["kty"], key["crv"]) == ("sig", "ES256", "EC", "P-256")
    assert "d" not in key


async def test_the_authorization_endpoint_refuses_everything(issuer: httpx2.AsyncClient) -> None:
    response = await issuer.get("/authorize", params={"response_type": "code", "client_id": "agent-1"})
    assert (response.status_code, response.json()["error"]) == (400, "unsupported_response_type")


# --- the token endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_credentials_returns_an_rfc9068_token_the_gateway_accepts(
    issuer: httpx2.AsyncClient, issuer_transport: HostRouter, issuer_config: IssuerConfig, clock: FakeClock, method: str
) -> None:
    form = {"grant_type": "client_credentials", "resource": RESOURCE_URL, "scope": "tools:read tools:call"}
    if method == "client_secret_basic":
        response = await post_token(issuer, form, basic("agent-1", AGENT_SECRET))
    else:
        response = await post_token(issuer, {**form, "client_id": "agent-1", "client_secret": AGENT_SECRET})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # RFC 6749 §5.1
    body = response.json()
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 300, "tools:read tools:call")
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert (header["typ"], header["alg"], header["kid"]) == ("at+jwt", "ES256", issuer_config.key.kid)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"}
    assert (claims["iss"], claims["sub"], claims["aud"], claims["client_id"]) == (
        ISSUER_URL,
        "alice",
        RESOURCE_URL,
        "agent-1",
    )
    assert claims["exp"] - claims["iat"] == 300 and claims["iat"] == int(clock.now)

    verifier, client = gateway_verifier(issuer_transport, clock)
    async with client:
        with anyio.fail_after(5):
            await verifier.start()
            principal = await verifier.verify(token, resource=RESOURCE_URL)
            with pytest.raises(InvalidToken):
                await verifier.verify(token, resource=RESOURCE_ORIGIN + "/other/mcp")
    assert (principal.agent_id, principal.delegating_user) == ("agent-1", "alice")
    assert principal.scopes == {"tools:read", "tools:call"}


async def test_omitting_scope_grants_the_client_default_scopes(issuer: httpx2.AsyncClient) -> None:
    response = await post_token(
        issuer, {"grant_type": "client_credentials", "resource": RESOURCE_URL}, basic("agent-1", AGENT_SECRET)
    )
    assert response.json()["scope"] == "tools:read"
    response = await post_token(
        issuer,
        {"grant_type": "client_credentials", "resource": RESOURCE_URL, "scope": ""},
        basic("agent-1", AGENT_SECRET),
    )
    assert response.json()["scope"] == "tools:read"


async def test_a_client_with_hashed_secret_and_no_sub_gets_itself_as_subject(issuer: httpx2.AsyncClient) -> None:
    response = await post_token(
        issuer, {"grant_type": "client_credentials", "resource": RESOURCE_URL}, basic("bot", BOT_SECRET)
    )
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["client_id"], claims["scope"]) == ("bot", "bot", "tools:read")


GOOD = {"grant_type": "client_credentials", "resource": RESOURCE_URL, "scope": "tools:read"}


@pytest.mark.parametrize(
    ("form", "headers", "status", "error"),
    [
        ({**GOOD, "grant_type": ""}, basic("agent-1", AGENT_SECRET), 400, "invalid_request"),
        ({k: v for k, v in GOOD.items() if k != "grant_type"}, basic("agent-1", AGENT_SECRET), 400, "invalid_request"),
        ({**GOOD, "grant_type": "authorization_code"}, basic("agent-1", AGENT_SECRET), 400, "unsupported_grant_type"),
        ({**GOOD, "grant_type": "password"}, basic("agent-1", AGENT_SECRET), 400, "unsupported_grant_type"),
        ({**GOOD, "scope": "tools:read delete_everything"}, basic("agent-1", AGENT_SECRET), 400, "invalid_scope"),
        ({**GOOD, "scope": "admin"}, basic("bot", BOT_SECRET), 400, "invalid_scope"),
        ({**GOOD, "scope": "tools:\u00e9"}, basic("agent-1", AGENT_SECRET), 400, "invalid_scope"),
        ({k: v for k, v in GOOD.items() if k != "resource"}, basic("agent-1", AGENT_SECRET), 400, "invalid_target"),
        ({**GOOD, "resource": "/mcp"}, basic("agent-1", AGENT_SECRET), 400, "invalid_target"),
        ({**GOOD, "resource": RESOURCE_URL + "#frag"}, basic("agent-1", AGENT_SECRET), 400, "invalid_target"),
        ({**GOOD, "resource": "http://127.0.0.1:9002/other"}, basic("bot", BOT_SECRET), 400, "invalid_target"),
        (GOOD, basic("agent-1", "wrong-secret"), 401, "invalid_client"),
        (GOOD, basic("nobody", AGENT_SECRET), 401, "invalid_client"),
        (GOOD, {"authorization": "Basic !!!"}, 401, "invalid_client"),
        (GOOD, {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, 401, "invalid_client"),
        (GOOD, {"authorization": "Bearer abc"}, 401, "invalid_client"),
        (GOOD, {}, 401, "invalid_client"),
        ({**GOOD, "client_id": "agent-1", "client_secret": "wrong"}, {}, 401, "invalid_client"),
        (
            {**GOOD, "client_id": "agent-1", "client_secret": AGENT_SECRET},
            basic("agent-1", AGENT_SECRET),
            400,
            "invalid_request",
        ),
        ({**GOOD, "client_id": "bot"}, basic("agent-1", AGENT_SECRET), 400, "invalid_request"),
    ],
    ids=[
        "empty-grant-type",
        "missing-grant-type",
        "authorization-code-grant",
        "password-grant",
        "scope-beyond-allowed",
        "scope-of-another-client",
        "malformed-scope",
        "missing-resource",
        "relative-resource",
        "resource-with-fragment",
        "resource-not-allowed-for-client",
        "wrong-secret",
        "unknown-client",
        "basic-not-base64",
        "basic-without-colon",
        "bearer-instead-of-basic",
        "no-client-authentication",
        "wrong-post-secret",
        "two-authentication-methods",
        "client-id-mismatch",
    ],
)
async def test_bad_token_requests_get_rfc6749_errors(
    issuer: httpx2.AsyncClient, form: dict[str, str], headers: dict[str, str], status: int, error: str
) -> None:
    response = await post_token(issuer, form, headers)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" not in response.json()
    assert AGENT_SECRET not in response.text
    if headers.get("authorization", "").startswith("Basic") and status == 401:
        assert response.headers["www-authenticate"].startswith("Basic ")  # RFC 6749 §5.2


async def test_malformed_request_bodies_are_invalid_request(issuer: httpx2.AsyncClient) -> None:
    auth = basic("agent-1", AGENT_SECRET)
    with anyio.fail_after(5):
        as_json = await issuer.post("/token", json=GOOD, headers=auth)
        repeated = await issuer.post(
            "/token",
            content=b"grant_type=client_credentials&grant_type=client_credentials&resource=x:y",
            headers={**auth, "content-type": "application/x-www-form-urlencoded"},
        )
        two_resources = await issuer.post(
            "/token",
            content=f"grant_type=client_credentials&resource={RESOURCE_URL}&resource=http://a/b".encode(),
            headers={**auth, "content-type": "application/x-www-form-urlencoded"},
        )
        huge = await issuer.post("/token", data={**GOOD, "pad": "x" * 20_000}, headers=auth)
        not_utf8 = await issuer.post(
            "/token", content=b"grant_type=\xff", headers={**auth, "content-type": "application/x-www-form-urlencoded"}
        )
        get = await issuer.get("/token")
    assert [r.json()["error"] for r in (as_json, repeated, two_resources, huge, not_utf8)] == [
        "invalid_request",
        "invalid_request",
        "invalid_target",
        "invalid_request",
        "invalid_request",
    ]
    assert get.status_code == 405


async def test_the_issuer_logs_a_development_only_warning_when_it_starts(
    issuer_config: IssuerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_issuer_app(issuer_config)
    with caplog.at_level(logging.WARNING, logger="mcp_gateway.devissuer.server"):
        async with app.router.lifespan_context(app):
            pass
    assert "DEVELOPMENT ONLY" in caplog.text


def test_mint_token_checks_scopes_and_resource_like_the_endpoint(issuer_config: IssuerConfig) -> None:
    token = mint_token(issuer_config, "agent-1", scopes=["admin"], resource=RESOURCE_URL, now=1_800_000_000)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["scope"], claims["aud"], claims["exp"]) == ("admin", RESOURCE_URL, 1_800_000_300)
    with pytest.raises(TokenRequestError) as raised:
        mint_token(issuer_config, "bot", scopes=["admin"], resource=RESOURCE_URL, now=0)
    assert raised.value.error == "invalid_scope"
    with pytest.raises(TokenRequestError):
        mint_token(issuer_config, "nobody", scopes=None, resource=RESOURCE_URL, now=0)


# --- the MCP SDK's ClientCredentialsOAuthProvider against this issuer ---------------------------------


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def protected_resource(verifier: TokenVerifier) -> Starlette:
    """A minimal RFC 9728 resource server in front of our verifier, as the gateway will be."""

    async def metadata(request: Request) -> Response:
        return JSONResponse(
            {"resource": RESOURCE_URL, "authorization_servers": [ISSUER_URL], "scopes_supported": ["tools:read"]}
        )

    async def mcp(request: Request) -> Response:
        try:
            token = bearer_token(request.scope["headers"], max_token_bytes=8192)
            principal = await verifier.verify(token, resource=RESOURCE_URL)
        except AuthError as exc:
            exc.with_challenge(resource_metadata=PRM_URL, scopes=["tools:read"])
            return JSONResponse({"error": exc.message}, exc.status_code, {"www-authenticate": exc.www_authenticate()})
        return JSONResponse({"agent": principal.agent_id, "scopes": sorted(principal.scopes)})

    return Starlette(
        routes=[
            Route("/.well-known/oauth-protected-resource/mcp", metadata),
            Route("/mcp", mcp, methods=["POST"]),
        ]
    )


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_the_mcp_sdk_client_credentials_provider_obtains_a_token_that_our_verifier_accepts(
    issuer_config: IssuerConfig, clock: FakeClock, auth_method: Any
) -> None:
    issuer_app = create_issuer_app(issuer_config, clock=clock)
    seen: list[dict[str, Any]] = []

    async def recording_issuer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({"path": scope["path"], "headers": dict(scope["headers"])})
        await issuer_app(scope, receive, send)

    async with httpx2.AsyncClient(transport=HostRouter({"127.0.0.1:9001": recording_issuer})) as gateway_http:
        verifier = build_verifier(
            AuthConfig(issuer=ISSUER_URL, jwks_uri=None, algorithms=("ES256",)), http_client=gateway_http, clock=clock
        )
        router = HostRouter({"127.0.0.1:9001": recording_issuer, "127.0.0.1:9002": protected_resource(verifier)})
        provider = ClientCredentialsOAuthProvider(
            server_url=RESOURCE_URL,
            storage=MemoryStorage(),
            client_id="agent-1",
            client_secret=AGENT_SECRET,
            token_endpoint_auth_method=auth_method,
            issuer=ISSUER_URL,
        )
        async with httpx2.AsyncClient(transport=router, auth=provider) as agent:
            with anyio.fail_after(10):
                response = await agent.post(RESOURCE_URL, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 200, response.text
    # Scope came from the 401 challenge; the SDK sent RFC 8707 `resource`, so `aud` is exactly this route.
    assert response.json() == {"agent": "agent-1", "scopes": ["tools:read"]}
    assert "/token" in [request["path"] for request in seen]
