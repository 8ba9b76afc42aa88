"""An issuer TOML on disk, and an in-process network of ASGI apps addressed by host:port."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import httpx2
from starlette.types import ASGIApp

ISSUER_URL = "http://127.0.0.1:9001"
AGENT_SECRET = "agent-1-secret-0123456789"
BOT_SECRET = "bot-secret-0123456789"


def write_issuer_toml(directory: Path, *, issuer: str = ISSUER_URL, algorithm: str = "ES256", extra: str = "") -> Path:
    path = directory / "issuer.toml"
    path.write_text(
        f'''
issuer = "{issuer}"
signing_key = "keys/issuer-key.pem"
algorithm = "{algorithm}"
token_lifetime_seconds = 300

[clients.agent-1]
secret = "{AGENT_SECRET}"
scopes = ["tools:read", "tools:call", "admin"]
default_scopes = ["tools:read"]
sub = "alice"

[clients.bot]
secret_sha256 = "{hashlib.sha256(BOT_SECRET.encode()).hexdigest()}"
scopes = ["tools:read"]
resources = ["http://127.0.0.1:9002/mcp"]
{extra}
''',
        encoding="utf-8",
    )
    return path


class HostRouter(httpx2.AsyncBaseTransport):
    """Sends each request to the ASGI app registered for its host:port; nothing touches the network."""

    def __init__(self, apps: Mapping[str, ASGIApp]) -> None:
        self._transports = {netloc: httpx2.ASGITransport(app=app) for netloc, app in apps.items()}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        netloc = f"{request.url.host}:{request.url.port}"
        transport = self._transports.get(netloc)
        if transport is None:
            raise httpx2.ConnectError(f"nothing at {netloc}", request=request)
        return await transport.handle_async_request(request)
