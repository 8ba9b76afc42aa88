"""A whole gateway stack on loopback for end-to-end tests: example upstream, dev issuer, gateway.

    async with gateway_stack(tmp_path) as stack:
        token = stack.token(["tools:read"])                  # real ES256 JWT from the dev issuer
        async with stack.client(token, mode="legacy") as client:   # the mcp SDK's own client
            await client.call_tool("echo", {"message": "hi"})
        stack.upstream_requests                              # what the upstream received (headers), via a tap

Every server is a real uvicorn on 127.0.0.1 with an OS-picked port; the gateway's port is bound
before its config is written so that `public_url` (and so every token's audience) is exact.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.app import Gateway, create_app
from mcp_gateway.audit.sink import AuditSink
from mcp_gateway.config import GatewayConfig, load_config
from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from mcp_gateway.server import build_server
from tests._servers import serve_asgi

DEFAULT_ALLOWLIST = """
default_scopes = ["tools:call"]

[servers.everything.tool_scopes]
echo = ["tools:read"]
delete_everything = ["admin"]
show_request_headers = []

[servers.everything.resource_scopes]
"file:///public/" = ["resources:read"]

[servers.everything.prompt_scopes]
summarize = ["prompts:read"]
"""

ALL_SCOPES = ("tools:read", "tools:call", "resources:read", "prompts:read", "admin")


class UpstreamTap:
    """ASGI middleware in front of the example upstream that records every request's method and headers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        index = len(self.requests)
        self.requests.append((scope["method"], headers, b""))

        async def tapped_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    # Recorded the moment the upstream has the whole body, before it can answer, so a
                    # test that has its response never races the tap.
                    self.requests[index] = (scope["method"], headers, bytes(body))
            return message

        await self.app(scope, tapped_receive, send)

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Decoded JSON-RPC bodies the upstream received whose method is `method`."""
        import json

        out = []
        for _, _, raw in self.requests:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("method") == method:
                out.append(message)
        return out


@dataclass
class Stack:
    config: GatewayConfig
    app: Gateway
    issuer: IssuerConfig
    base_url: str
    upstream_url: str
    tap: UpstreamTap
    directory: Path
    client_secret: str
    extra: dict[str, Any] = field(default_factory=dict)

    def mcp_url(self, server: str = "everything") -> str:
        return f"{self.base_url}/{server}/mcp"

    def token(
        self,
        scopes: Sequence[str] = ("tools:read", "tools:call"),
        *,
        client: str = "agent-a",
        resource: str | None = None,
    ) -> str:
        return mint_token(
            self.issuer, client, scopes=list(scopes), resource=resource or self.mcp_url(), now=time.time()
        )

    @asynccontextmanager
    async def client(
        self, token: str | None, *, mode: str = "legacy", server: str = "everything", **kwargs: Any
    ) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(self.mcp_url(server), http_client=http)
            async with Client(transport, mode=mode, **kwargs) as client:
                yield client


def _bound_socket() -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio only disables Nagle's algorithm for sockets created with it, and
    # with Nagle on every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def _serve_on(
    app: Any, sock: socket.socket, server: uvicorn.Server | None = None, **config: Any
) -> AsyncIterator[None]:
    server = server or uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3, **config)
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                if server.should_exit:
                    raise RuntimeError("server failed to start")
                await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True


@asynccontextmanager
async def gateway_stack(
    directory: Path,
    *,
    allowlist: str = DEFAULT_ALLOWLIST,
    gateway_extra: str = "",
    audit_extra: str = "",
    server_extra: str = "",
    audit: AuditSink | None = None,
    upstream_app: Any = None,
    secrets: Mapping[str, str] | None = None,
    clients: Mapping[str, Sequence[str]] | None = None,
    upstream_tls: tuple[str, str] | None = None,
    front_door: bool = False,
    audit_config: str = 'database = "audit.db"\n',
    **app_options: Any,
) -> AsyncIterator[Stack]:
    """Start issuer, upstream and gateway; `allowlist` is the body of `[servers.everything]`, `audit_config`
    the body of `[audit]`.

    `upstream_tls` = (certfile, keyfile) serves the upstream over https (pins go in `server_extra`).
    `front_door` serves the gateway with the server `mcp-gateway serve` builds (connection limits, metrics);
    `app_options` go to `create_app` (seams such as `limits`).
    """
    from examples.everything_server import build_app

    tap = UpstreamTap(upstream_app if upstream_app is not None else build_app())
    issuer_sock, gateway_sock = _bound_socket(), _bound_socket()
    issuer_url = f"http://127.0.0.1:{issuer_sock.getsockname()[1]}"
    gateway_port = gateway_sock.getsockname()[1]
    client_secret = "test-secret-0123456789abcdef"
    clients = clients or {"agent-a": ALL_SCOPES, "agent-b": ALL_SCOPES}
    client_tables = "\n".join(
        f'[clients.{name}]\nsecret = "{client_secret}"\nscopes = [{", ".join(repr(s) for s in scopes)}]\n'
        f'sub = "user-of-{name}"\n'
        for name, scopes in clients.items()
    )
    (directory / "issuer.toml").write_text(
        f'issuer = "{issuer_url}"\nsigning_key = "issuer-key.pem"\nalgorithm = "ES256"\n'
        f"token_lifetime_seconds = 600\n\n{client_tables}"
    )
    issuer = load_issuer_config(directory / "issuer.toml")
    tls = {"ssl_certfile": upstream_tls[0], "ssl_keyfile": upstream_tls[1]} if upstream_tls else {}
    async with serve_asgi(tap, **tls) as upstream_base, _serve_on(create_issuer_app(issuer), issuer_sock):
        upstream_url = f"{upstream_base}/mcp"
        (directory / "server_allowlist.toml").write_text(
            f'[servers.everything]\nurl = "{upstream_url}"\n{server_extra}\n{allowlist}\n'
        )
        (directory / "gateway.toml").write_text(
            f'public_url = "http://127.0.0.1:{gateway_port}"\nport = {gateway_port}\n'
            f'allowlist = "server_allowlist.toml"\n{gateway_extra}\n'
            f'[auth]\nissuer = "{issuer_url}"\njwks_uri = "{issuer_url}/jwks.json"\nalgorithms = ["ES256"]\n\n'
            f"[audit]\n{audit_config}{audit_extra}"
        )
        config = load_config(directory / "gateway.toml")
        app = create_app(config, audit=audit, secrets=secrets if secrets is not None else {}, **app_options)
        server = None
        if front_door:
            server = build_server(
                app, config, host="127.0.0.1", port=gateway_port, log_level="warning", configure_logging=False
            )
            server.config.timeout_graceful_shutdown = 3
        async with _serve_on(app, gateway_sock, server, http="httptools"):
            yield Stack(
                config=config,
                app=app,
                issuer=issuer,
                base_url=f"http://127.0.0.1:{gateway_port}",
                upstream_url=upstream_url,
                tap=tap,
                directory=directory,
                client_secret=client_secret,
            )
