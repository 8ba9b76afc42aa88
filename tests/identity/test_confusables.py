"""Allowlist entries that look alike are refused at load time unless acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.config import load_config
from mcp_gateway.errors import ConfigError
from mcp_gateway.identity.confusables import confusable, confusable_pairs


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("github", "githud"),  # one substitution
        ("github", "gthub"),  # one deletion
        ("github", "gihtub"),  # adjacent swap
        ("github", "git-hub"),  # separator
        ("my_server", "my-server"),  # - / _ swap
        ("github", "g\u0456thub"),  # Cyrillic i (U+0456)
        ("paypal", "paypa1"),  # digit homoglyph
        ("modern", "modem"),  # rn / m
        ("GitHub", "github"),  # case
    ],
)
def test_lookalike_names_are_confusable(a: str, b: str) -> None:
    assert confusable(a, b)


@pytest.mark.parametrize(("a", "b"), [("github", "gitlab"), ("slack", "jira"), ("db", "dc"), ("files", "filesystem")])
def test_distinct_names_are_not_confusable(a: str, b: str) -> None:
    assert not confusable(a, b)


def test_hosts_that_look_alike_are_reported_but_one_host_with_two_ports_is_not() -> None:
    urls = {
        "alpha": "https://api.github.com/mcp",
        "beta": "https://api.githud.com/mcp",
        "gamma": "http://127.0.0.1:3001/mcp",
        "delta": "http://127.0.0.1:3002/mcp",
    }
    assert confusable_pairs(urls, {}) == [("alpha", "beta", "hosts 'api.github.com' and 'api.githud.com' look alike")]
    assert confusable_pairs(urls, {"beta": ("alpha",)}) == []


def test_a_confusable_allowlist_stops_start_up_naming_both_entries_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "allow.toml").write_text(
        '[servers.github]\nurl = "http://127.0.0.1:1/mcp"\n[servers.githud]\nurl = "http://127.0.0.1:2/mcp"\n'
    )
    (tmp_path / "gateway.toml").write_text('allowlist = "allow.toml"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "gateway.toml")
    assert info.value.key == "servers.github"
    assert "servers.githud" in info.value.problem
    assert 'acknowledge_confusable = ["githud"]' in info.value.problem
    (tmp_path / "allow.toml").write_text(
        '[servers.github]\nurl = "http://127.0.0.1:1/mcp"\nacknowledge_confusable = ["githud"]\n'
        '[servers.githud]\nurl = "http://127.0.0.1:2/mcp"\n'
    )
    assert set(load_config(tmp_path / "gateway.toml").servers) == {"github", "githud"}
