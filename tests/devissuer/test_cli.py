from __future__ import annotations

import argparse
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.auth.verifier import build_verifier
from mcp_gateway.config import AuthConfig
from mcp_gateway.devissuer.cli import add_commands
from mcp_gateway.devissuer.config import load_issuer_config
from mcp_gateway.devissuer.server import create_issuer_app
from tests.auth._support import FakeClock

from ._support import ISSUER_URL, HostRouter, write_issuer_toml

RESOURCE = "http://127.0.0.1:8080/everything/mcp"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mcp-gateway")
    add_commands(root.add_subparsers(dest="command", required=True))
    return root


def test_issuer_and_token_subcommands_are_registered_with_their_defaults() -> None:
    issuer = parser().parse_args(["issuer"])
    assert (issuer.config, issuer.host, issuer.port) == ("./issuer.toml", "127.0.0.1", None)
    assert callable(issuer.func)
    token = parser().parse_args(["token", "--client", "agent-1", "--resource", RESOURCE])
    assert (token.issuer_config, token.client, token.scope, token.resource) == (
        "./issuer.toml",
        "agent-1",
        None,
        RESOURCE,
    )
    assert token.func is not issuer.func
    with pytest.raises(SystemExit):
        parser().parse_args(["token", "--client", "agent-1"])  # --resource is required


@pytest.mark.anyio
async def test_token_prints_a_token_the_gateway_verifier_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anyio_backend: str
) -> None:
    path = write_issuer_toml(tmp_path)
    args = parser().parse_args(
        [
            "token",
            "--issuer-config",
            str(path),
            "--client",
            "agent-1",
            "--scope",
            "tools:call admin",
            "--resource",
            RESOURCE,
        ]
    )
    assert args.func(args) == 0
    token = capsys.readouterr().out.strip()

    import time

    clock = FakeClock(time.time())
    transport = HostRouter({"127.0.0.1:9001": create_issuer_app(load_issuer_config(path))})
    async with httpx2.AsyncClient(transport=transport) as client:
        verifier = build_verifier(AuthConfig(issuer=ISSUER_URL, algorithms=("ES256",)), http_client=client, clock=clock)
        with anyio.fail_after(5):
            principal = await verifier.verify(token, resource=RESOURCE)
    assert principal.scopes == {"tools:call", "admin"}
    assert principal.agent_id == "agent-1"


def test_token_reports_request_and_config_errors_on_stderr_with_a_nonzero_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_issuer_toml(tmp_path)
    args = parser().parse_args(
        ["token", "--issuer-config", str(path), "--client", "bot", "--scope", "admin", "--resource", RESOURCE]
    )
    assert args.func(args) == 1
    assert "invalid_scope" in capsys.readouterr().err
    args = parser().parse_args(
        ["token", "--issuer-config", str(tmp_path / "missing.toml"), "--client", "bot", "--resource", RESOURCE]
    )
    assert args.func(args) == 2
    captured = capsys.readouterr()
    assert "missing.toml" in captured.err and captured.out == ""


def test_issuer_with_a_broken_config_exits_2_without_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parser().parse_args(["issuer", "--config", str(tmp_path / "nope.toml")])
    assert args.func(args) == 2
    assert "nope.toml" in capsys.readouterr().err
