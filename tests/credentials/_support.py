"""A loopback stack for upstream credentials: the dev issuer as AS, two upstreams that verify their own tokens
(the example server with the `mcp` SDK's resource-server support), and the gateway in front of both.

    async with credential_stack(tmp_path, CREDENTIALS) as stack:
        response = await stack.call("alpha", "whoami", stack.token())
        stack.upstreams["alpha"].tap.requests   # what the upstream received
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from examples.everything_server import ResourceAuth, build_app
from mcp_gateway.app import Gateway, create_app
from mcp_gateway.config import GatewayConfig, load_config
from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from tests._mcp import modern_headers
from tests._stack import UpstreamTap, _bound_socket, _serve_on
from tests.proxy._support import modern_call_body

AGENT = "agent-a"
USER = "user-of-agent-a"
GATEWAY_CLIENT = "the-gateway"
GATEWAY_SECRET = "canary-client-secret-7d3f9a01"  # the gateway's secret at the dev issuer
STATIC_TOKEN = "canary-static-token-51c2e8b4"
ROTATED_TOKEN = "canary-rotated-token-0a9be6f3"
SCOPES = ("tools:read", "tools:call", "admin")
SERVERS = ("alpha", "beta")

SERVER_BODY = """default_scopes = ["tools:call"]

[servers.{name}.tool_scopes]
echo = ["tools:read"]
whoami = ["tools:read"]
show_request_headers = ["tools:read"]
delete_everything = ["admin"]
"""


class Refuser:
    """ASGI middleware: answers the next `refuse` MCP requests with 401 invalid_token, or 307 to `redirect`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refuse = 0
        self.redirect: str | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp" and (self.refuse or self.redirect):
            if self.redirect:
                headers = [(b"location", self.redirect.encode()), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 307, "headers": headers})
            else:
                self.refuse -= 1
                challenge = b'Bearer error="invalid_token"'
                headers = [(b"www-authenticate", challenge), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


class CountingApp:
    """ASGI middleware counting requests by path (how many token requests the issuer saw)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)

    def count(self, path: str) -> int:
        return self.paths.count(path)


@dataclass
class Upstream:
    url: str
    tap: UpstreamTap
    refuser: Refuser


@dataclass
class CredentialStack:
    config: GatewayConfig
    app: Gateway
    issuer: IssuerConfig
    issuer_url: str
    issuer_app: CountingApp
    base_url: str
    upstreams: dict[str, Upstream]
    directory: Path
    http: httpx2.AsyncClient
    bodies: list[str] = field(default_factory=list)  # every response body the tests saw, for canary checks

    def token(self, scopes: tuple[str, ...] = SCOPES, server: str = "alpha") -> str:
        return mint_token(self.issuer, AGENT, scopes=list(scopes), resource=self.mcp_url(server), now=time.time())

    def mcp_url(self, server: str) -> str:
        return f"{self.base_url}/{server}/mcp"

    async def call(
        self, server: str, tool: str, token: str, arguments: dict[str, Any] | None = None
    ) -> httpx2.Response:
        response = await self.http.post(
            self.mcp_url(server),
            headers=modern_headers(token, "tools/call", tool),
            json=modern_call_body(tool, arguments or {}),
        )
        self.bodies.append(response.text)
        return response

    async def whoami(self, server: str, token: str) -> dict[str, Any]:
        response = await self.call(server, "whoami", token)
        assert response.status_code == 200, response.text
        text: str = response.json()["result"]["content"][0]["text"]
        claims: dict[str, Any] = json.loads(text)
        return claims

    def received_authorization(self, server: str) -> list[str]:
        return [headers.get("authorization", "") for method, headers, _ in self.upstreams[server].tap.requests]


def _issuer_toml(issuer_url: str, audiences: list[str]) -> str:
    scopes = ", ".join(f'"{s}"' for s in SCOPES)
    allowed = ", ".join(f'"{a}"' for a in audiences)
    return (
        f'issuer = "{issuer_url}"\nsigning_key = "issuer-key.pem"\nalgorithm = "ES256"\n'
        f"token_lifetime_seconds = 600\n\n"
        f'[clients.{AGENT}]\nsecret = "agent-secret-0123456789"\nscopes = [{scopes}]\nsub = "{USER}"\n\n'
        f'[clients.{GATEWAY_CLIENT}]\nsecret = "{GATEWAY_SECRET}"\nscopes = [{scopes}]\n'
        f"[clients.{GATEWAY_CLIENT}.may_exchange]\n{AGENT} = [{allowed}]\n"
    )


@asynccontextmanager
async def credential_stack(
    directory: Path,
    credentials: Mapping[str, str],
    *,
    secrets: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[CredentialStack]:
    """`credentials`: server name ("alpha", "beta") → the body of its `[servers.NAME.credentials]` table."""
    issuer_sock, gateway_sock = _bound_socket(), _bound_socket()
    upstream_socks = {name: _bound_socket() for name in SERVERS}
    issuer_url = f"http://127.0.0.1:{issuer_sock.getsockname()[1]}"
    base_url = f"http://127.0.0.1:{gateway_sock.getsockname()[1]}"
    urls = {name: f"http://127.0.0.1:{sock.getsockname()[1]}/mcp" for name, sock in upstream_socks.items()}
    (directory / "issuer.toml").write_text(_issuer_toml(issuer_url, list(urls.values())))
    issuer = load_issuer_config(directory / "issuer.toml")
    issuer_app = CountingApp(create_issuer_app(issuer))
    trusted = {issuer_url: f"{issuer_url}/jwks.json", base_url: f"{base_url}/.well-known/jwks.json"}
    static = {STATIC_TOKEN: "static-client", ROTATED_TOKEN: "static-client"}
    upstreams: dict[str, Upstream] = {}
    allowlist = []
    for name, url in urls.items():
        tap = UpstreamTap(build_app(auth=ResourceAuth(url, trusted, static)))
        upstreams[name] = Upstream(url, tap, Refuser(tap))
        allowlist.append(f'[servers.{name}]\nurl = "{url}"\n{SERVER_BODY.format(name=name)}')
        if name in credentials:
            allowlist.append(f"[servers.{name}.credentials]\n{credentials[name]}\n")
    (directory / "server_allowlist.toml").write_text("\n".join(allowlist))
    (directory / "gateway.toml").write_text(
        f'public_url = "{base_url}"\nport = {gateway_sock.getsockname()[1]}\nallowlist = "server_allowlist.toml"\n'
        f'[auth]\nissuer = "{issuer_url}"\njwks_uri = "{issuer_url}/jwks.json"\nalgorithms = ["ES256"]\n\n'
        f'[audit]\ndatabase = "audit.db"\n'
    )
    config = load_config(directory / "gateway.toml")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(_serve_on(issuer_app, issuer_sock))
        for name, sock in upstream_socks.items():
            await stack.enter_async_context(_serve_on(upstreams[name].refuser, sock))
        app = create_app(config, secrets=dict(secrets or {}), clock=clock)
        await stack.enter_async_context(_serve_on(app, gateway_sock, http="httptools"))
        http = await stack.enter_async_context(httpx2.AsyncClient(timeout=20))
        yield CredentialStack(config, app, issuer, issuer_url, issuer_app, base_url, upstreams, directory, http)
