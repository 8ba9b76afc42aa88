"""`mcp-gateway doctor`: one line per check against the real stack, exit 1 on any failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mcp_gateway.doctor import postgres_reachable, redis_reachable
from tests._servers import refused_url
from tests._stack import Stack, gateway_stack
from tests.e2e._audit_support import run_cli

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with gateway_stack(tmp_path) as stack:
        yield stack


async def _doctor(stack: Stack, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with anyio.fail_after(60):  # the command runs its own event loop: off this one, which serves the stack
        code, out = await anyio.to_thread.run_sync(
            run_cli, capsys, "doctor", "--config", str(stack.directory / "gateway.toml")
        )
    return code, out.splitlines()


def _line(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if line[6:].startswith(name)]
    return line


async def test_a_good_configuration_passes_every_check_with_one_line_each(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = await _doctor(stack, capsys)
    assert code == 0, lines
    assert [line[6:30].strip() for line in lines] == [
        "config",
        "token keys (JWKS)",
        "clock skew",
        "upstream everything",
        "audit store",
    ]
    assert all(line.startswith("ok  ") for line in lines)
    assert "1 of 1 key(s) usable with ES256" in _line(lines, "token keys")
    assert "tool(s)" in _line(lines, "upstream everything")


async def test_an_unreachable_jwks_fails_its_check_and_the_command(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack.directory / "gateway.toml"
    dead = refused_url()
    path.write_text(path.read_text().replace(f'jwks_uri = "{stack.issuer.issuer}/jwks.json"', f'jwks_uri = "{dead}"'))
    code, lines = await _doctor(stack, capsys)
    assert code == 1
    assert _line(lines, "token keys").startswith(f"FAIL  token keys (JWKS)        {dead}: unreachable")
    assert _line(lines, "upstream everything").startswith("ok")


async def test_tool_definitions_that_differ_from_their_pins_fail_the_upstream_check(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack.directory / "server_allowlist.toml"
    path.write_text(path.read_text() + f'\n[servers.everything.tools_sha256]\necho = "{"0" * 64}"\n')
    code, lines = await _doctor(stack, capsys)
    assert code == 1
    line = _line(lines, "upstream everything")
    assert line.startswith("FAIL")
    assert ": echo: definition changed (pinned 000000000000…, presented " in line
    assert "tool(s) not pinned (quarantined): " in line


async def test_an_audit_database_that_cannot_be_created_fails_the_audit_check(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack.directory / "gateway.toml"
    path.write_text(path.read_text().replace('database = "audit.db"', 'database = "gateway.toml/audit.db"'))
    code, lines = await _doctor(stack, capsys)
    assert code == 1
    assert _line(lines, "audit store").startswith("FAIL")


async def test_an_invalid_configuration_is_one_failing_line(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    path = stack.directory / "gateway.toml"
    path.write_text("unknown_key = 1\n" + path.read_text())
    code, lines = await _doctor(stack, capsys)
    assert code == 1
    assert lines == [
        f"FAIL  config                   {path}: unknown_key: unknown key; remove it or check its spelling"
    ]


async def test_postgresql_and_redis_probes_tell_a_live_server_from_a_missing_one() -> None:
    with anyio.fail_after(20):
        assert "answers" in await postgres_reachable("postgresql://127.0.0.1:5432/test")
        assert "answers PING" in await redis_reachable("redis://127.0.0.1:6379/0")
        for probe in (postgres_reachable, redis_reachable):
            with pytest.raises(OSError):
                await probe(refused_url())
        with pytest.raises(RuntimeError, match="does not answer PING like Redis"):
            await redis_reachable("redis://127.0.0.1:5432")


async def test_a_postgresql_audit_store_and_a_redis_are_checked_when_configured(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    import secrets

    from tests.audit.postgres._pg import SERVER_URL, execute, schema_url
    from tests.limits._redis import REDIS_URL

    schema = f"doctor_{secrets.token_hex(4)}"
    await execute(SERVER_URL, f"CREATE SCHEMA {schema}")
    try:
        path = stack.directory / "gateway.toml"
        text = path.read_text().replace('database = "audit.db"', f'url = "{schema_url(SERVER_URL, schema)}"')
        path.write_text(text + f'\n[rate_limits]\nredis_url = "{REDIS_URL}"\n')
        code, lines = await _doctor(stack, capsys)
    finally:
        await execute(SERVER_URL, f"DROP SCHEMA {schema} CASCADE")
    assert code == 0, lines
    assert _line(lines, "audit store").startswith("ok    audit store              postgresql store opens")
    assert _line(lines, "postgresql").startswith("ok")
    assert _line(lines, "redis").startswith("ok") and "answers PING" in _line(lines, "redis")
