"""`mcp-gateway allowlist pin` records what a live upstream presents: its TLS key and tool definitions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from mcp_gateway.cli import main
from mcp_gateway.config import load_config
from mcp_gateway.identity.tool_pins import tool_sha256
from tests._servers import serve_asgi

pytestmark = pytest.mark.anyio


def _write(tmp_path: Path, url: str, extra: str = "", tables: str = "") -> Path:
    (tmp_path / "allow.toml").write_text(
        f'# the team\'s upstreams\n[servers.everything]\nurl = "{url}"\n{extra}default_scopes = ["tools:call"]\n'
        + tables
    )
    (tmp_path / "gateway.toml").write_text('allowlist = "allow.toml"\n[auth]\nissuer = "https://as.example"\n')
    return tmp_path / "gateway.toml"


async def _main(*argv: str) -> int:
    # The CLI runs its own event loop; keep it off the test's loop.
    return await asyncio.to_thread(main, list(argv))


async def test_pin_yes_writes_every_tool_pin_and_then_nothing_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.everything_server import build_app

    async with serve_asgi(build_app()) as base:
        config_path = _write(tmp_path, f"{base}/mcp")
        assert await _main("allowlist", "pin", "everything", "--config", str(config_path), "--yes") == 0
        pins = load_config(config_path).servers["everything"].tools_sha256
        assert "echo" in pins and "delete_everything" in pins
        assert (tmp_path / "allow.toml").read_text().startswith("# the team's upstreams")
        capsys.readouterr()
        assert await _main("allowlist", "pin", "everything", "--config", str(config_path), "--diff") == 0
        assert "= nothing changed" in capsys.readouterr().out


async def test_pin_diff_names_a_changed_definition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.everything_server import build_app

    async with serve_asgi(build_app()) as base:
        stale = tool_sha256({"name": "echo", "description": "an older echo"})
        config_path = _write(tmp_path, f"{base}/mcp", tables=f'[servers.everything.tools_sha256]\necho = "{stale}"\n')
        assert await _main("allowlist", "pin", "everything", "--config", str(config_path), "--diff") == 0
    out = capsys.readouterr().out
    assert f"~ echo: {stale} -> " in out
    assert "+ delete_everything (new tool; quarantined until pinned)" in out


async def test_pin_records_the_tls_key_of_an_https_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.everything_server import build_app

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve_asgi(build_app(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as base:
        placeholder = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        config_path = _write(tmp_path, f"{base}/mcp", f'ca_bundle = "ca.pem"\ntls_spki_sha256 = ["{placeholder}"]\n')
        assert await _main("allowlist", "pin", "everything", "--config", str(config_path), "--diff", "--yes") == 0
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from mcp_gateway.identity.tls_pins import spki_sha256

    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER)
    assert f"~ tls key: presented {spki_sha256(der)}" in capsys.readouterr().out
    assert load_config(config_path).servers["everything"].tls_spki_sha256 == (spki_sha256(der),)


def test_check_reports_every_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = _write(tmp_path, "http://127.0.0.1:9/mcp")
    assert main(["allowlist", "check", "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "everything" in out and "tools not pinned" in out and "OK: 1 servers" in out
