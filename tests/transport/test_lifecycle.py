"""`mcp-gateway serve` as a real process: SIGTERM drains (streams ended, calls finished or aborted, exit 0)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.devissuer.config import IssuerConfig, load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from tests._mcp import ACCEPT_BOTH, HANDSHAKE, open_session
from tests._servers import free_port, serve_asgi
from tests.e2e._audit_support import call_tool, gateway_process, json_rows, run_cli, write_gateway_config
from tests.proxy._support import Receive, Scope, ScriptedUpstream, Send, result_for, send_raw, start_sse

pytestmark = pytest.mark.anyio

ISSUER = "https://issuer.lifecycle.test"


@dataclass
class Upstream:
    """What the scripted upstream has seen, as events the test waits on."""

    arrived: dict[str, anyio.Event] = field(default_factory=lambda: {"slow": anyio.Event(), "stuck": anyio.Event()})
    release: anyio.Event = field(default_factory=anyio.Event)
    stream_open: anyio.Event = field(default_factory=anyio.Event)

    async def script(self, scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        if scope["method"] == "GET":
            await start_sse(send)
            await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
            self.stream_open.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        method = body.get("method")
        if method == "initialize":
            result = {"protocolVersion": HANDSHAKE, "capabilities": {}, "serverInfo": {"name": "s", "version": "0"}}
            answer = {"jsonrpc": "2.0", "id": body["id"], "result": result}
            await send_raw(send, 200, _json(answer), headers=[(b"mcp-session-id", b"upstream-session")])
        elif method == "tools/call":
            tool = body["params"]["name"]
            self.arrived[tool].set()
            if tool == "slow":
                await self.release.wait()
                await send_raw(send, 200, _json(result_for(body, "finished during the drain")))
            else:
                while (await receive())["type"] != "http.disconnect":
                    pass
        else:
            await send_raw(send, 202, b"", content_type=None)


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


@dataclass
class Setup:
    config: Path
    base_url: str
    issuer: IssuerConfig
    upstream: Upstream
    log: Path

    @property
    def url(self) -> str:
        return f"{self.base_url}/everything/mcp"

    def token(self) -> str:
        return mint_token(self.issuer, "agent-a", scopes=["tools:call"], resource=self.url, now=time.time())


@asynccontextmanager
async def setup(directory: Path, grace: int) -> AsyncIterator[Setup]:
    (directory / "issuer.toml").write_text(
        f'issuer = "{ISSUER}"\nalgorithm = "ES256"\ntoken_lifetime_seconds = 600\n\n'
        '[clients.agent-a]\nsecret = "test-secret-0123456789abcdef"\nscopes = ["tools:call"]\nsub = "user-a"\n'
    )
    issuer = load_issuer_config(directory / "issuer.toml")
    upstream = Upstream()
    async with (
        serve_asgi(ScriptedUpstream(upstream.script)) as upstream_base,
        serve_asgi(create_issuer_app(issuer)) as issuer_base,
    ):
        port = free_port()
        config = write_gateway_config(
            directory,
            port=port,
            upstream_url=f"{upstream_base}/mcp",
            issuer=ISSUER,
            jwks_uri=f"{issuer_base}/jwks.json",
            allowlist='default_scopes = ["tools:call"]',
        )
        config.write_text(f"shutdown_grace_seconds = {grace}\n" + config.read_text())
        yield Setup(config, f"http://127.0.0.1:{port}", issuer, upstream, directory / "gateway.log")


def _outcomes(capsys: pytest.CaptureFixture[str], config: Path, tool: str) -> list[tuple[str, Any]]:
    code, out = run_cli(capsys, "audit", "query", "--config", str(config), "--format", "json")
    assert code == 0
    return [(row["outcome"], row["http_status"]) for row in json_rows(out) if row["tool"] == tool]


def _refuses_connections(base_url: str) -> bool:
    port = int(base_url.rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


async def test_sigterm_ends_streams_lets_the_call_in_flight_finish_and_commit_then_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with setup(tmp_path, grace=20) as s:
        async with gateway_process(s.config, s.base_url, log=s.log) as process:
            token = s.token()
            async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
                session = await open_session(http, s.url, token)
                stream_end: list[str] = []
                call_answer: list[httpx2.Response] = []

                async def listen() -> None:
                    headers = {
                        "authorization": f"Bearer {token}",
                        "accept": "text/event-stream",
                        "mcp-protocol-version": HANDSHAKE,
                        "mcp-session-id": session,
                    }
                    async with http.stream("GET", s.url, headers=headers) as response:
                        assert response.status_code == 200
                        await response.aread()  # raises if the stream is cut instead of ended
                    stream_end.append("clean")

                async def slow_call() -> None:
                    headers = {"accept": ACCEPT_BOTH}
                    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow"}}
                    sent = await http.post(
                        s.url,
                        json=body,
                        headers={
                            **headers,
                            "authorization": f"Bearer {token}",
                            "mcp-protocol-version": HANDSHAKE,
                            "mcp-session-id": session,
                        },
                    )
                    call_answer.append(sent)

                with anyio.fail_after(20):
                    tg.start_soon(listen)
                    await s.upstream.stream_open.wait()
                    tg.start_soon(slow_call)
                    await s.upstream.arrived["slow"].wait()
                    process.send_signal(signal.SIGTERM)
                    while not stream_end:  # the stream ends at once, while the call still runs
                        await anyio.sleep(0.02)
                    while not _refuses_connections(s.base_url):
                        await anyio.sleep(0.02)
                    assert not call_answer
                    s.upstream.release.set()
                    await process.wait()
            assert process.returncode == 0, s.log.read_text()
        (answer,) = call_answer
        assert answer.status_code == 200
        assert answer.json()["result"]["content"][0]["text"] == "finished during the drain"
        assert stream_end == ["clean"]
        assert _outcomes(capsys, s.config, "slow") == [("ok", 200)]  # intent and outcome, merged by the query


async def test_a_call_outlasting_the_grace_is_cancelled_and_recorded_as_aborted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with setup(tmp_path, grace=1) as s:
        async with gateway_process(s.config, s.base_url, log=s.log) as process:
            async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
                answers: list[httpx2.Response] = []

                async def stuck_call() -> None:
                    answers.append(await call_tool(http, s.url, s.token(), "stuck", {}))

                with anyio.fail_after(20):
                    tg.start_soon(stuck_call)
                    await s.upstream.arrived["stuck"].wait()
                    started = time.monotonic()
                    process.send_signal(signal.SIGTERM)
                    await process.wait()
                    waited = time.monotonic() - started
            assert process.returncode == 0, s.log.read_text()
            assert 1 <= waited < 10
        (answer,) = answers
        assert answer.status_code == 503
        assert "cut short by a shutdown" in answer.text
        assert _outcomes(capsys, s.config, "stuck") == [("aborted", 499)]
