"""The pinned tools' input schemas for the offline policy commands, read from a saved tools/list result.

`policy test` and `policy replay` have no live upstream to list tools from, so the definitions come from a
file (`--tools [SERVER=]FILE`): the JSON of a tools/list result, as `mcp-gateway allowlist pin` sees it.
A definition is used only if it hashes to its pin in the allowlist (`tools_sha256`), exactly as the live
catalogue uses only pinned definitions; one that does not is refused with an error naming both hashes.
Calls are then judged as the live gateway judges them (`proxy/tool_gate.py`): arguments that break the
pinned `inputSchema` are denied by the `input_schema` rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp_gateway.config import ServerEntry
from mcp_gateway.errors import ConfigError
from mcp_gateway.identity.tool_pins import tool_sha256
from mcp_gateway.policy.schemas import ArgumentSchema

__all__ = ["PinnedSchemas", "load_pinned_schemas"]


class PinnedSchemas:
    """(server, tool) → the compiled input schema of its pinned definition; an `ArgumentsCheck`."""

    __slots__ = ("_schemas",)

    def __init__(self, schemas: Mapping[tuple[str, str], ArgumentSchema]) -> None:
        self._schemas = dict(schemas)

    def __call__(self, server: str, tool: str, arguments: Any) -> str | None:
        schema = self._schemas.get((server, tool))
        if schema is None:
            return None  # no pinned definition given for it: nothing to check it against
        # MCP tools §Tool (inputSchema): an absent arguments object is the empty object (as tool_gate.py).
        violation = schema.violation({} if arguments is None else arguments)
        return None if violation is None else violation.message(tool)

    def __len__(self) -> int:
        return len(self._schemas)


def load_pinned_schemas(specs: list[str], servers: Mapping[str, ServerEntry]) -> PinnedSchemas:
    """The schemas of every pinned tool in the `--tools` files; ConfigError naming the file and the fix."""
    schemas: dict[tuple[str, str], ArgumentSchema] = {}
    for spec in specs:
        server, path = _target(spec, servers)
        entry = servers[server]
        for tool in _tools(path):
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str) or name not in entry.tools_sha256:
                continue  # not pinned: the live gateway quarantines it, so no call to it reaches a schema
            where = f"tools[{name!r}]"
            pinned = entry.tools_sha256[name]
            try:
                presented = tool_sha256(tool)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigError(str(path), where, f"the definition cannot be hashed: {exc}") from exc
            if presented != pinned:
                raise ConfigError(
                    str(path),
                    where,
                    f"the definition hashes to {presented} but servers.{server}.tools_sha256 pins {pinned}; "
                    "give the definition the pin was made from, or re-pin it (mcp-gateway allowlist pin)",
                )
            try:
                schemas[server, name] = ArgumentSchema(tool.get("inputSchema"), strict=entry.strict_arguments)
            except ValueError as exc:
                raise ConfigError(str(path), f"{where}.inputSchema", str(exc)) from exc
    return PinnedSchemas(schemas)


def _target(spec: str, servers: Mapping[str, ServerEntry]) -> tuple[str, Path]:
    """`SERVER=FILE`, or `FILE` when the allowlist names exactly one server."""
    server, sep, file = spec.partition("=")
    if sep and server in servers:
        return server, Path(file)
    known = ", ".join(sorted(servers)) or "none"
    if sep and not Path(spec).exists():
        raise ConfigError(spec, "--tools", f"no [servers.{server}] in the allowlist (servers: {known})")
    if len(servers) == 1:
        return next(iter(servers)), Path(spec)
    raise ConfigError(spec, "--tools", f"name the server: --tools SERVER=FILE (servers: {known})")


def _tools(path: Path) -> list[Any]:
    """The `tools` array of a tools/list result (or of the whole JSON-RPC response carrying it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot read a tools/list result: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, list):
        raise ConfigError(str(path), "tools", 'expected a tools/list result: {"tools": [...]}')
    return tools
