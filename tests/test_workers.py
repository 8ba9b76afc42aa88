"""`mcp-gateway serve --workers N`: one port, N processes that open each other's sessions, one SIGTERM stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.abc import Process

from mcp_gateway.cli import main as gateway_cli
from mcp_gateway.devissuer.config import load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app, mint_token
from tests._mcp import HANDSHAKE, initialize_body, modern_headers, post_headers
from tests._servers import free_port, serve_asgi
from tests.e2e._audit_support import REPO, _child_env, wait_ready, write_gateway_config
from tests.limits._redis import REDIS_URL, key_prefix
from tests.proxy._support import call_body, modern_call_body

pytestmark = pytest.mark.anyio

ISSUER = "https://issuer.workers.test"
CALLS = 59  # with initialize and notifications/initialized: an odd number of POSTs
_POSTS = re.compile(r'^mcp_gateway_requests_total\{method="POST",server="everything",status="\d+"\} (\S+)$', re.M)


@asynccontextmanager
async def workers_gateway(directory: Path, workers: int, *, extra: str = "") -> AsyncIterator[tuple[Process, str, str]]:
    """Upstream and issuer in this process, `serve --workers N` as a real process (audit off, `extra` appended
    to gateway.toml); yields the process, its base URL and a token."""
    from examples.everything_server import build_app

    (directory / "issuer.toml").write_text(
        f'issuer = "{ISSUER}"\nalgorithm = "ES256"\ntoken_lifetime_seconds = 600\n\n'
        '[clients.agent-a]\nsecret = "test-secret-0123456789abcdef"\nscopes = ["tools:read"]\nsub = "user-a"\n'
    )
    issuer = load_issuer_config(directory / "issuer.toml")
    async with serve_asgi(build_app()) as upstream_base, serve_asgi(create_issuer_app(issuer)) as issuer_base:
        port = free_port()
        config = write_gateway_config(
            directory,
            port=port,
            upstream_url=f"{upstream_base}/mcp",
            issuer=ISSUER,
            jwks_uri=f"{issuer_base}/jwks.json",
            allowlist='[servers.everything.tool_scopes]\necho = ["tools:read"]',
            audit_extra=f"enabled = false\n{extra}",  # [audit] is the file's last table
        )
        base_url = f"http://127.0.0.1:{port}"
        log = directory / "gateway.log"
        with open(log, "ab") as stderr:
            process = await anyio.open_process(
                [sys.executable, "-m", "mcp_gateway.cli", "serve", "--config", str(config), "--workers", str(workers)],
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
            resource = f"{base_url}/everything/mcp"
            token = mint_token(issuer, "agent-a", scopes=["tools:read"], resource=resource, now=time.time())
            yield process, base_url, token
        finally:
            with anyio.move_on_after(10, shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                await process.wait()
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def _post(url: str, headers: dict[str, str], body: dict[str, object]) -> httpx2.Response:
    # A new connection for every request, so the kernel hands each one to either worker.
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(url, headers=headers, json=body)


async def _per_worker_posts(base_url: str, total: int) -> set[float]:
    """The POSTs each worker counted in its own /metrics, scraped (each scrape reaches either worker) until
    two counts adding up to `total` have been seen. `total` is odd, so the two counts always differ."""
    assert total % 2 == 1
    counts: set[float] = set()
    while len(counts) < 2 or sum(counts) != total:
        async with httpx2.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"{base_url}/metrics")).text
        counts.add(sum(float(n) for n in _POSTS.findall(metrics)))
    return counts


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_session_made_through_one_worker_works_on_the_other_and_one_sigterm_stops_them_all(
    tmp_path: Path,
) -> None:
    async with workers_gateway(tmp_path, 2) as (process, base_url, token):
        workers = _children(process.pid)
        assert len(workers) == 2
        url = f"{base_url}/everything/mcp"
        with anyio.fail_after(60):
            initialized = await _post(url, post_headers(token), initialize_body())
            assert initialized.status_code == 200, initialized.text
            session = initialized.headers["mcp-session-id"]
            headers = post_headers(token, version=HANDSHAKE, session=session)
            notified = await _post(url, headers, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert notified.status_code == 202
            for n in range(CALLS):
                response = await _post(url, headers, call_body("echo", {"message": f"m{n}"}, request_id=n + 2))
                assert response.status_code == 200, response.text
                assert f"m{n}" in response.text
            # Both workers served POSTs: the one that did not create the session served calls in it.
            counts = await _per_worker_posts(base_url, CALLS + 2)
        assert min(counts) >= 1

        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            await process.wait()
        assert process.returncode == 0
        assert not any(_alive(pid) for pid in workers)


async def test_a_per_agent_burst_holds_across_workers_when_limits_are_in_redis(tmp_path: Path) -> None:
    burst = 20
    async with key_prefix() as prefix:
        extra = (
            f'\n[rate_limits]\nredis_url = "{REDIS_URL}"\nredis_key_prefix = "{prefix}"\n'
            f"per_agent = {{ rate = 0.001, burst = {burst} }}\n"
        )
        async with workers_gateway(tmp_path, 2, extra=extra) as (_, base_url, token):
            url = f"{base_url}/everything/mcp"
            headers = modern_headers(token, "tools/call", "echo")
            body = modern_call_body("echo", {})
            with anyio.fail_after(30):
                statuses = [(await _post(url, headers, body)).status_code for _ in range(burst + 1)]
                counts = await _per_worker_posts(base_url, burst + 1)
    assert statuses == [200] * burst + [429]  # one bucket, though each worker served some of the calls
    assert min(counts) >= 1


async def test_a_worker_that_dies_on_its_own_stops_the_others_and_the_parent_exits_1(tmp_path: Path) -> None:
    async with workers_gateway(tmp_path, 2) as (process, _, _):
        first, second = _children(process.pid)
        os.kill(first, signal.SIGKILL)
        with anyio.fail_after(15):
            await process.wait()
        assert process.returncode == 1
        assert not _alive(second)
    assert "exited with status -9; stopping the others" in (tmp_path / "gateway.log").read_text()


def test_several_workers_with_the_sqlite_audit_log_are_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_gateway_config(
        tmp_path,
        port=free_port(),
        upstream_url="http://127.0.0.1:9/mcp",
        issuer=ISSUER,
        jwks_uri="http://127.0.0.1:9/jwks.json",
        allowlist="",
    )
    capsys.readouterr()
    assert gateway_cli(["serve", "--config", str(config), "--workers", "2"]) == 2
    assert 'use [audit] url = "postgresql://…" for --workers > 1' in capsys.readouterr().err
    assert not (tmp_path / "audit.db").exists()  # refused before anything was opened
