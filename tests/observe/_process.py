"""A scripted upstream, the dev issuer and `mcp-gateway serve` as a real process, for the observability tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.abc import Process

from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from tests._servers import free_port, refused_url, serve_asgi
from tests.e2e._audit_support import REPO
from tests.proxy._support import Receive, Scope, ScriptedUpstream, Send, result_for, send_raw

ISSUER = "https://issuer.observe.test"
UPSTREAM_SECRET = "upstream-credential-CANARY-7f3a9c"


async def echo_headers(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    """Answers every call with the headers it received: a leaking upstream, which the gateway must redact."""
    seen = {k.decode(): v.decode() for k, v in scope["headers"]}
    await send_raw(send, 200, json.dumps(result_for(body, json.dumps(seen))).encode())


@dataclass
class Served:
    base_url: str
    issuer: IssuerConfig
    process: Process
    log: Path
    directory: Path

    def url(self, server: str = "everything") -> str:
        return f"{self.base_url}/{server}/mcp"

    def token(self, server: str = "everything") -> str:
        return mint_token(self.issuer, "agent-a", scopes=["tools:call"], resource=self.url(server), now=time.time())

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            return await self.process.wait()


@asynccontextmanager
async def served_gateway(
    directory: Path, gateway_extra: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Served]:
    (directory / "issuer.toml").write_text(
        f'issuer = "{ISSUER}"\nalgorithm = "ES256"\ntoken_lifetime_seconds = 600\n\n'
        '[clients.agent-a]\nsecret = "issuer-client-secret-CANARY"\nscopes = ["tools:call"]\nsub = "user-a"\n'
    )
    issuer = load_issuer_config(directory / "issuer.toml")
    async with (
        serve_asgi(ScriptedUpstream(echo_headers)) as upstream_base,
        serve_asgi(create_issuer_app(issuer)) as issuer_base,
    ):
        port = free_port()
        (directory / "server_allowlist.toml").write_text(
            f'[servers.everything]\nurl = "{upstream_base}/mcp"\ndefault_scopes = ["tools:call"]\n'
            '[servers.everything.credentials]\ntoken_env = "CANARY_UPSTREAM_TOKEN"\n\n'
            f'[servers.dead]\nurl = "{refused_url()}"\ndefault_scopes = ["tools:call"]\n'
        )
        (directory / "gateway.toml").write_text(
            f'public_url = "http://127.0.0.1:{port}"\nport = {port}\nallowlist = "server_allowlist.toml"\n'
            f"{gateway_extra}\n\n"
            f'[auth]\nissuer = "{ISSUER}"\njwks_uri = "{issuer_base}/jwks.json"\nalgorithms = ["ES256"]\n\n'
            '[audit]\ndatabase = "audit.db"\n'
        )
        child_env = dict(os.environ, PYTHONPATH=str(REPO), CANARY_UPSTREAM_TOKEN=UPSTREAM_SECRET, **(env or {}))
        log = directory / "gateway.log"
        with open(log, "wb") as stderr:
            process = await anyio.open_process(
                [sys.executable, "-m", "mcp_gateway.cli", "serve", "--config", str(directory / "gateway.toml")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
                env=child_env,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            with anyio.fail_after(20):
                async with httpx2.AsyncClient(timeout=2) as http:
                    while True:
                        if process.returncode is not None:
                            raise RuntimeError(f"serve exited: {log.read_text()}")
                        try:
                            if (await http.get(f"{base_url}/healthz")).status_code == 200:
                                break
                        except httpx2.TransportError:
                            pass
                        await anyio.sleep(0.05)
            yield Served(base_url, issuer, process, log, directory)
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()
