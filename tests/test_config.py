"""Configuration is loaded once; every mistake names the file, the key and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.config import load_config
from mcp_gateway.errors import ConfigError
from tests._configs import ALLOWLIST, GATEWAY

SERVER = (
    ALLOWLIST
    + """[servers.github.tool_scopes]
create_issue = ["repo:write"]
"""
)


def _write(tmp_path: Path, gateway: str = GATEWAY, allowlist: str = SERVER) -> Path:
    (tmp_path / "allow.toml").write_text(allowlist)
    path = tmp_path / "gateway.toml"
    path.write_text(gateway)
    return path


def test_a_valid_config_loads_into_frozen_models_with_a_policy_version(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path))
    assert config.resource_uri("github") == "https://gw.example.com/github/mcp"
    assert config.resource_metadata_url("github") == (
        "https://gw.example.com/.well-known/oauth-protected-resource/github/mcp"
    )
    assert config.servers["github"].tool_scopes["create_issue"] == ("repo:write",)
    assert len(config.policy_version) == 64
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is an implementation detail
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("gateway", "allowlist", "file", "key", "words"),
    [
        ("bogus = 1\n" + GATEWAY, SERVER, "gateway.toml", "bogus", "unknown key"),
        (
            GATEWAY.replace('issuer = "https://auth.example.com"\n', ""),
            SERVER,
            "gateway.toml",
            "auth.issuer",
            "missing",
        ),
        ("port = 'eighty'\n" + GATEWAY, SERVER, "gateway.toml", "port", "integer"),
        (
            GATEWAY,
            SERVER.replace("https://api.github.example/mcp", "ftp://x/mcp"),
            "allow.toml",
            "servers.github.url",
            "http",
        ),
        (
            GATEWAY,
            SERVER.replace("https://api.github.example", "http://10.0.0.8"),
            "allow.toml",
            "servers.github",
            "loopback",
        ),
        (
            GATEWAY,
            SERVER + "\n[servers.GitHub]\nurl = 'http://127.0.0.1:1/mcp'\n",
            "allow.toml",
            "servers.GitHub",
            "duplicates",
        ),
        (
            GATEWAY,
            SERVER.replace("tls_spki_sha256", "tls_spki_sha265"),
            "allow.toml",
            "servers.github.tls_spki_sha265",
            "unknown key",
        ),
        (
            GATEWAY,
            SERVER.replace('"repo:write"', '"repo write"'),
            "allow.toml",
            "servers.github.tool_scopes",
            "pattern",
        ),
        (
            GATEWAY,
            SERVER.replace('["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]', "[]"),
            "allow.toml",
            "servers.github",
            "pins",
        ),
        (GATEWAY, SERVER.replace("47DEQpj8HBSa", "47DEQ"), "allow.toml", "servers.github.tls_spki_sha256", "32-byte"),
        (GATEWAY + "\n[auth.x]\n", SERVER, "gateway.toml", "auth.x", "unknown key"),
        ("[auth\n", SERVER, "gateway.toml", "(syntax)", "not valid TOML"),
        (
            GATEWAY + '[rate_limits]\nredis_url = "http://r:6379"\n',
            SERVER,
            "gateway.toml",
            "rate_limits.redis_url",
            "redis://",
        ),
        (
            GATEWAY + '[rate_limits]\non_store_down = "open"\n',
            SERVER,
            "gateway.toml",
            "rate_limits.on_store_down",
            "deny",
        ),
        # Where limits are kept is the gateway's choice, not a server's.
        (
            GATEWAY,
            SERVER + '[servers.github.rate_limits]\nredis_url = "redis://r"\n',
            "allow.toml",
            "servers.github.rate_limits.redis_url",
            "unknown key",
        ),
    ],
)
def test_every_mistake_names_the_file_the_key_and_the_fix(
    tmp_path: Path, gateway: str, allowlist: str, file: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, gateway, allowlist))
    assert info.value.file.endswith(file)
    assert info.value.key.startswith(key)
    assert words in str(info.value)


def test_two_servers_with_one_name_are_refused_by_toml_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, allowlist=SERVER + SERVER))
    assert "not valid TOML" in str(info.value)


def test_the_gateway_never_runs_without_an_auth_table(tmp_path: Path) -> None:
    from mcp_gateway.app import create_app

    config = load_config(_write(tmp_path, gateway='public_url = "https://gw.example.com"\nallowlist = "allow.toml"\n'))
    with pytest.raises(ConfigError) as info:
        create_app(config)
    assert info.value.key == "auth"


def test_a_missing_allowlist_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(GATEWAY)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file.endswith("allow.toml")
    assert "cannot read" in str(info.value)


def test_audit_synchronous_reaches_the_sqlite_sink_and_audit_off_uses_no_store(tmp_path: Path) -> None:
    from mcp_gateway.app import create_app
    from mcp_gateway.audit.sink import NullAuditSink
    from mcp_gateway.audit.sqlite import SQLiteAuditSink

    config = load_config(_write(tmp_path, gateway=GATEWAY + '\n[audit]\nsynchronous = "normal"\n'))
    sink = create_app(config).audit
    assert isinstance(sink, SQLiteAuditSink) and sink.synchronous == "normal"
    off = load_config(_write(tmp_path, gateway=GATEWAY + "\n[audit]\nenabled = false\n"))
    assert isinstance(create_app(off).audit, NullAuditSink)


def test_connection_limits_default_to_ten_second_heads_five_second_idle_and_1024_connections(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path))
    assert (config.header_timeout_seconds, config.idle_connection_seconds, config.max_connections) == (10, 5, 1024)


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ("header_timeout_seconds = 0", "header_timeout_seconds", "greater than 0"),
        ("idle_connection_seconds = -1", "idle_connection_seconds", "greater than 0"),
        ("max_connections = 0", "max_connections", "greater than 0"),
        ('max_connections = "many"', "max_connections", "valid integer"),
        ("max_conections = 10", "max_conections", "unknown key"),
    ],
)
def test_connection_limits_that_make_no_sense_are_refused_by_name(
    tmp_path: Path, line: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, line + "\n" + GATEWAY))
    assert (info.value.key, words in str(info.value)) == (key, True), str(info.value)
