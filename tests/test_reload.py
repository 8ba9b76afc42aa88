"""Reloading the allowlist into a running gateway: atomic, policy version tracked, a broken file changes nothing."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client import generate_latest

from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.reload import Reloader
from tests._mcp import modern_headers
from tests._stack import Stack, gateway_stack
from tests.e2e._audit_support import gateway_process, run_cli_process
from tests.proxy._support import modern_call_body

pytestmark = pytest.mark.anyio

ALLOWLIST = """
default_scopes = ["tools:call"]

[servers.everything.tool_scopes]
echo = ["tools:read"]

[servers.other]
url = "{upstream}"
default_scopes = ["tools:call"]
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with gateway_stack(tmp_path, allowlist=ALLOWLIST.replace("{upstream}", "http://127.0.0.1:9/mcp")) as stack:
        yield stack


async def _echo(stack: Stack, http: httpx2.AsyncClient) -> httpx2.Response:
    with anyio.fail_after(10):
        return await http.post(
            stack.mcp_url(),
            headers=modern_headers(stack.token(["tools:read"]), "tools/call", "echo"),
            json=modern_call_body("echo", {"message": "hi"}),
        )


def _rewrite(stack: Stack, old: str, new: str) -> None:
    path = stack.directory / "server_allowlist.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _reload_count(stack: Stack, result: str) -> float:
    for line in generate_latest(stack.app.registry).decode().splitlines():
        if line.startswith(f'mcp_gateway_config_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    raise AssertionError("no reload counter exported")


async def test_a_reload_applies_new_rules_from_the_next_call_and_records_the_new_policy_version(
    tmp_path: Path,
) -> None:
    audit = MemoryAuditSink()
    allowlist = ALLOWLIST.replace("{upstream}", "http://127.0.0.1:9/mcp")
    async with gateway_stack(tmp_path, allowlist=allowlist, audit=audit) as stack:
        reloader = Reloader(stack.app, stack.config)
        before_routes = dict(stack.app.routes)
        async with httpx2.AsyncClient() as http:
            assert (await _echo(stack, http)).status_code == 200
            _rewrite(stack, 'echo = ["tools:read"]', 'echo = ["admin"]')
            result = reloader.reload()
            assert result.ok, result.message
            refused = await _echo(stack, http)
        assert refused.status_code == 403  # step-up: echo now needs admin
        assert 'scope="admin"' in refused.headers["www-authenticate"]
        versions = [r.policy_version for r in audit.records if r.tool == "echo" and r.policy_version]
        assert len(set(versions)) == 2 and versions[-1] == result.policy_version != stack.config.policy_version
        # The unchanged entry kept its very route (pool, credentials, catalogue); the changed one did not.
        assert stack.app.routes["other"] is before_routes["other"]
        assert stack.app.routes["everything"] is not before_routes["everything"]
        assert _reload_count(stack, "success") == 1
        assert "changed ['everything']" in result.message


async def test_a_broken_allowlist_keeps_the_running_configuration_and_says_why(stack: Stack) -> None:
    reloader = Reloader(stack.app, stack.config)
    routes = stack.app.routes
    _rewrite(stack, "[servers.other]", "[servers.other")
    result = reloader.reload()
    assert not result.ok
    assert "server_allowlist.toml: (syntax): not valid TOML" in result.message
    assert "running configuration kept" in result.message
    assert stack.app.routes is routes
    assert stack.app.recorder.policy_version == stack.config.policy_version
    assert _reload_count(stack, "failure") == 1
    assert _reload_count(stack, "success") == 0
    async with httpx2.AsyncClient() as http:
        assert (await _echo(stack, http)).status_code == 200


async def test_an_allowlist_whose_credential_cannot_be_resolved_is_refused_as_a_whole(stack: Stack) -> None:
    reloader = Reloader(stack.app, stack.config)
    routes = stack.app.routes
    _rewrite(
        stack, "[servers.other]", '[servers.everything.credentials]\ntoken_env = "NOT_SET_ANYWHERE"\n\n[servers.other]'
    )
    result = reloader.reload()
    assert not result.ok
    assert "environment variable NOT_SET_ANYWHERE is not set" in result.message
    assert stack.app.routes is routes


async def test_a_handshake_session_opened_before_a_reload_works_after_it(stack: Stack) -> None:
    reloader = Reloader(stack.app, stack.config)
    async with stack.client(stack.token(["tools:read", "tools:call"]), mode="legacy") as client:
        await client.call_tool("echo", {"message": "before"})
        _rewrite(
            stack,
            'default_scopes = ["tools:call"]\n\n[servers.everything',
            'default_scopes = ["tools:read"]\n\n[servers.everything',
        )
        assert reloader.reload().ok
        result = await client.call_tool("echo", {"message": "after"})
    assert "after" in str(result)


async def test_reload_command_signals_serve_and_reports_each_verdict_with_its_exit_code(tmp_path: Path) -> None:
    async with gateway_stack(tmp_path, allowlist=ALLOWLIST.replace("{upstream}", "http://127.0.0.1:9/mcp")) as stack:
        # A second gateway, served by `mcp-gateway serve` in its own process, from a copy of the same files.
        served = tmp_path / "served"
        served.mkdir()
        port = _free_port()
        for name in ("gateway.toml", "server_allowlist.toml"):
            text = (stack.directory / name).read_text().replace(str(stack.config.port), str(port))
            text = text.replace("http://127.0.0.1:9/mcp", stack.upstream_url)  # /readyz wants every upstream up
            (served / name).write_text(text)
        config = served / "gateway.toml"
        async with gateway_process(config, f"http://127.0.0.1:{port}", log=served / "gateway.log") as process:
            good = await run_cli_process("reload", "--config", str(config))
            assert good.returncode == 0, good.stdout.decode() + good.stderr.decode()
            assert b"reloaded" in good.stdout and b"unchanged 2" in good.stdout

            (served / "server_allowlist.toml").write_text("[servers.other\n")
            broken = await run_cli_process("reload", "--config", str(config))
            assert broken.returncode == 2
            assert b"not valid TOML" in broken.stderr

            allowlist = (stack.directory / "server_allowlist.toml").read_text()
            allowlist = allowlist.replace("http://127.0.0.1:9/mcp", stack.upstream_url)
            (served / "server_allowlist.toml").write_text(
                allowlist.replace(
                    "[servers.other]", '[servers.everything.credentials]\ntoken_env = "NOT_SET_X"\n\n[servers.other]'
                )
            )
            refused = await run_cli_process("reload", "--config", str(config))
            assert refused.returncode == 1, refused.stdout.decode()
            assert b"NOT_SET_X is not set" in refused.stdout
            assert process.returncode is None  # still serving
            with anyio.fail_after(10):
                async with httpx2.AsyncClient() as http:
                    metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            assert 'mcp_gateway_config_reloads_total{result="success"} 1.0' in metrics
            assert 'mcp_gateway_config_reloads_total{result="failure"} 1.0' in metrics
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                await process.wait()
        assert process.returncode == 0
        assert not (served / "mcp-gateway.pid").exists()


def _free_port() -> int:
    from tests._servers import free_port

    return free_port()


async def test_reload_reaches_every_worker_of_serve_workers_through_the_parent(tmp_path: Path) -> None:
    from tests.test_workers import workers_gateway

    async with workers_gateway(tmp_path, 2) as (process, base_url, token):
        assert (tmp_path / "mcp-gateway.pid").read_text().strip() == str(process.pid)
        allowlist = tmp_path / "server_allowlist.toml"
        allowlist.write_text(allowlist.read_text().replace('echo = ["tools:read"]', 'echo = ["admin"]'))
        reloaded = await run_cli_process("reload", "--config", str(tmp_path / "gateway.toml"))
        assert reloaded.returncode == 0, reloaded.stdout.decode() + reloaded.stderr.decode()
        # The command returns on the first worker's verdict; the other applies its own SIGHUP a moment later.
        # Each call opens a new connection, which either worker may accept: a run of refusals long enough
        # that both must have answered comes only once both apply the new rule (a worker that never did
        # would break every run, and the deadline fails the test).
        streak = 0
        with anyio.fail_after(30):
            async with httpx2.AsyncClient() as http:
                while streak < 20:
                    response = await http.post(
                        f"{base_url}/everything/mcp",
                        headers={**modern_headers(token, "tools/call", "echo"), "connection": "close"},
                        json=modern_call_body("echo", {"message": "hi"}),
                    )
                    streak = streak + 1 if response.status_code == 403 else 0
