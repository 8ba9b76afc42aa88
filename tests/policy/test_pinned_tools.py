"""The offline policy commands' input schemas: saved tools/list results, used only where they match their pins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcp_gateway.config import ServerEntry
from mcp_gateway.errors import ConfigError
from mcp_gateway.identity.tool_pins import tool_sha256
from mcp_gateway.policy.pinned_tools import load_pinned_schemas

TRANSFER = {
    "name": "transfer",
    "description": "Move money",
    "inputSchema": {
        "type": "object",
        "properties": {"amount": {"type": "number", "maximum": 1000}, "to": {"type": "string"}},
        "required": ["amount"],
    },
}
UNPINNED = {"name": "other", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}}


def _entry(name: str = "bank", pins: dict[str, str] | None = None, *, strict: bool = False) -> ServerEntry:
    pins = {"transfer": tool_sha256(TRANSFER)} if pins is None else pins
    return ServerEntry(name=name, url="http://127.0.0.1:9/mcp", tools_sha256=pins, strict_arguments=strict)


def _file(tmp_path: Path, body: Any, name: str = "tools.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def test_a_pinned_definition_gives_the_schema_its_calls_are_checked_against(tmp_path: Path) -> None:
    check = load_pinned_schemas([_file(tmp_path, {"tools": [TRANSFER, UNPINNED]})], {"bank": _entry()})
    assert len(check) == 1  # the unpinned tool gives no schema: the live gateway quarantines it
    assert check("bank", "transfer", {"amount": 10}) is None
    assert check("bank", "transfer", {"amount": 5000}) == (
        "Invalid params: arguments of tool 'transfer' break its input schema at '/amount': "
        "rule 'maximum' (schema '/properties/amount/maximum')"
    )
    assert check("bank", "transfer", None) is not None  # absent arguments are {}: `amount` is required
    assert check("bank", "other", {"x": 1}) is None
    assert check("elsewhere", "transfer", {"amount": 5000}) is None


def test_strict_arguments_refuses_undeclared_properties_offline_too(tmp_path: Path) -> None:
    check = load_pinned_schemas([_file(tmp_path, {"tools": [TRANSFER]})], {"bank": _entry(strict=True)})
    assert check("bank", "transfer", {"amount": 1, "memo": "x"}) is not None
    assert check("bank", "transfer", {"amount": 1, "to": "x"}) is None


def test_a_whole_json_rpc_response_and_a_server_named_file_are_read(tmp_path: Path) -> None:
    response = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [TRANSFER]}}
    servers = {"bank": _entry(), "shop": _entry("shop", {})}
    check = load_pinned_schemas(["bank=" + _file(tmp_path, response)], servers)
    assert check("bank", "transfer", {"amount": 5000}) is not None


def test_a_definition_that_does_not_match_its_pin_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    drifted = {**TRANSFER, "description": "Move money anywhere"}
    path = _file(tmp_path, {"tools": [drifted]})
    with pytest.raises(ConfigError) as raised:
        load_pinned_schemas([path], {"bank": _entry()})
    message = str(raised.value)
    assert path in message and "tools['transfer']" in message
    assert tool_sha256(drifted) in message and tool_sha256(TRANSFER) in message
    assert "re-pin it (mcp-gateway allowlist pin)" in message


@pytest.mark.parametrize(
    ("spec", "servers", "problem"),
    [
        ("{file}", {"bank": _entry(), "shop": _entry("shop", {})}, "name the server: --tools SERVER=FILE"),
        ("nope={file}", {"bank": _entry()}, "no [servers.nope] in the allowlist (servers: bank)"),
        ("{missing}", {"bank": _entry()}, "cannot read a tools/list result"),
        ("{list}", {"bank": _entry()}, 'expected a tools/list result: {"tools": [...]}'),
    ],
)
def test_unusable_tools_options_are_refused_with_the_fix(
    tmp_path: Path, spec: str, servers: dict[str, ServerEntry], problem: str
) -> None:
    names = {
        "file": _file(tmp_path, {"tools": [TRANSFER]}),
        "missing": str(tmp_path / "missing.json"),
        "list": _file(tmp_path, [TRANSFER], "list.json"),
    }
    with pytest.raises(ConfigError) as raised:
        load_pinned_schemas([spec.format(**names)], servers)
    assert problem in str(raised.value)


def test_a_pinned_schema_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    broken = {**TRANSFER, "inputSchema": {"type": "object", "properties": {"amount": {"type": 12}}}}
    with pytest.raises(ConfigError) as raised:
        load_pinned_schemas(
            [_file(tmp_path, {"tools": [broken]})], {"bank": _entry("bank", {"transfer": tool_sha256(broken)})}
        )
    assert "inputSchema does not compile" in str(raised.value)
