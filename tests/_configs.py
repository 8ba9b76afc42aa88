"""The smallest valid gateway.toml and allowlist, written to a folder, for tests of loading and wiring."""

from __future__ import annotations

from pathlib import Path

GATEWAY = """
public_url = "https://gw.example.com"
allowlist = "allow.toml"
[auth]
issuer = "https://auth.example.com"
jwks_uri = "https://auth.example.com/jwks.json"
"""
ALLOWLIST = """
[servers.github]
url = "https://api.github.example/mcp"
tls_spki_sha256 = ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]
default_scopes = ["tools:call"]
"""


def write_config(directory: Path, *, gateway: str = GATEWAY, allowlist: str = ALLOWLIST) -> Path:
    """Write `allow.toml` and `gateway.toml` into `directory`; return the gateway.toml path."""
    (directory / "allow.toml").write_text(allowlist)
    path = directory / "gateway.toml"
    path.write_text(gateway)
    return path
