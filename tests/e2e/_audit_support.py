"""Helpers for the end-to-end audit tests: raw MCP tool calls, the auditor's CLI, a gateway process.

response = await call_tool(http, url, token, "echo", {"message": "hi"}, reason="why")
code, out = run_cli(capsys, "audit", "query", "--config", str(config), "--format", "json")
async with gateway_process(config_path) as base_url: ...     # `mcp-gateway serve` as a real process
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import rfc8785
from anyio.abc import Process

from mcp_gateway.cli import main as gateway_cli
from tests._mcp import MODERN_META, modern_headers

REPO = Path(__file__).resolve().parents[2]
# The contract's field names (DESIGN.md), spelled out here rather than imported from the code under test.
CONTRACT_FIELDS = (
    "timestamp",
    "event_id",
    "agent_id",
    "delegating_user",
    "session_id",
    "mcp_server",
    "method",
    "tool",
    "scope_granted",
    "scopes_required",
    "token_ttl",
    "token_id",
    "request_context",
    "decision",
    "policy_rule",
    "outcome",
    "http_status",
    "latency_ms",
    "arguments_sha256",
)


def digest(arguments: Any) -> str:
    """What DESIGN.md says arguments_sha256 is: SHA-256 of the RFC 8785 canonical JSON of the arguments."""
    return hashlib.sha256(rfc8785.dumps(arguments)).hexdigest()


def call_body(
    method: str, params: Mapping[str, Any], *, request_id: int | str = 1, reason: str | None = None
) -> dict[str, Any]:
    """A 2026-07-28 request: every request carries its protocol envelope in `params._meta`."""
    meta: dict[str, Any] = dict(MODERN_META)
    if reason is not None:
        meta["request_context"] = reason
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}


async def call(
    http: httpx2.AsyncClient,
    url: str,
    token: str | None,
    method: str,
    params: Mapping[str, Any],
    *,
    request_id: int | str = 1,
    reason: str | None = None,
) -> httpx2.Response:
    """POST one stateless (2026-07-28) request naming a tool, resource or prompt to `url`."""
    name = params.get("uri") if method == "resources/read" else params.get("name")
    body = call_body(method, params, request_id=request_id, reason=reason)
    return await http.post(url, json=body, headers=modern_headers(token, method, name))


async def call_tool(
    http: httpx2.AsyncClient,
    url: str,
    token: str | None,
    tool: str,
    arguments: Mapping[str, Any],
    *,
    request_id: int | str = 1,
    reason: str | None = None,
) -> httpx2.Response:
    """POST one stateless (2026-07-28) tools/call to `url`."""
    params = {"name": tool, "arguments": dict(arguments)}
    return await call(http, url, token, "tools/call", params, request_id=request_id, reason=reason)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`mcp-gateway ARGV...` in this process; returns the exit status and stdout."""
    capsys.readouterr()
    code = gateway_cli(list(argv))
    return code, capsys.readouterr().out


async def run_cli_process(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """`python -m mcp_gateway.cli ARGV...` as a real process."""
    with anyio.fail_after(30):
        return await anyio.run_process(
            [sys.executable, "-m", "mcp_gateway.cli", *argv], check=False, cwd=REPO, env=_child_env()
        )


def json_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ReceivedCalls:
    """ASGI middleware in front of an upstream that records each JSON-RPC request body once it has fully
    arrived (what the upstream *saw*, even if the caller is killed before the answer), and runs a
    callback synchronously, before the upstream handles it, when the n-th `method` request arrives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []
        self._triggers: list[tuple[str, int, Callable[[], None]]] = []

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("method") == method]

    def on_call(self, method: str, count: int, callback: Callable[[], None]) -> None:
        self._triggers.append((method, count, callback))

    def _arrived(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)
        method = body.get("method")
        if self._triggers and isinstance(method, str):
            seen = len(self.calls(method))
            for trigger in [t for t in self._triggers if t[0] == method and seen >= t[1]]:
                self._triggers.remove(trigger)
                trigger[2]()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def tapped_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False) and body:
                    try:
                        decoded = json.loads(body)
                    except ValueError:
                        decoded = None
                    if isinstance(decoded, dict):
                        self._arrived(decoded)
            return message

        await self.app(scope, tapped_receive, send)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


async def wait_ready(base_url: str, process: Process | None = None, *, timeout: float = 20) -> None:
    """Wait until `GET /readyz` says 200 (token keys loaded, audit store open).

    A process cannot signal readiness any other way, so this probes; each probe is bounded.
    """
    with anyio.fail_after(timeout):
        async with httpx2.AsyncClient(timeout=2) as http:
            while True:
                if process is not None and process.returncode is not None:
                    raise RuntimeError(f"the gateway process exited with status {process.returncode}")
                try:
                    response = await http.get(f"{base_url}/readyz")
                    if response.status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)


@asynccontextmanager
async def gateway_process(config: Path, base_url: str, *, log: Path) -> AsyncIterator[Process]:
    """`python -m mcp_gateway.cli serve --config CONFIG` as a real process, ready when this yields.

    On exit a process still running is terminated (SIGTERM, a graceful shutdown); the test may already
    have killed it. Its stderr goes to `log`, so that a failure can be read afterwards.
    """
    with open(log, "ab") as stderr:
        process = await anyio.open_process(
            [sys.executable, "-m", "mcp_gateway.cli", "serve", "--config", str(config), "--log-level", "warning"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=REPO,
            env=_child_env(),
        )
    try:
        try:
            await wait_ready(base_url, process)
        except BaseException:
            raise RuntimeError(f"the gateway did not become ready; its log:\n{log.read_text()}") from None
        yield process
    finally:
        with anyio.move_on_after(10, shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.aclose()


def write_gateway_config(
    directory: Path,
    *,
    port: int,
    upstream_url: str,
    issuer: str,
    jwks_uri: str,
    allowlist: str,
    audit_extra: str = "",
) -> Path:
    """gateway.toml and server_allowlist.toml for one `everything` server; returns gateway.toml's path."""
    (directory / "server_allowlist.toml").write_text(f'[servers.everything]\nurl = "{upstream_url}"\n{allowlist}\n')
    config = directory / "gateway.toml"
    config.write_text(
        f'public_url = "http://127.0.0.1:{port}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'allowlist = "server_allowlist.toml"\n\n'
        f'[auth]\nissuer = "{issuer}"\njwks_uri = "{jwks_uri}"\nalgorithms = ["ES256"]\n\n'
        f'[audit]\ndatabase = "audit.db"\n{audit_extra}\n'
    )
    return config
