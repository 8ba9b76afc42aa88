"""A gateway in front of a small 'bank' upstream, with Cedar policies over its tools' arguments."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

from examples.everything_server import loopback_security
from tests._stack import Stack, gateway_stack

ARGUMENTS_SCHEMA = "type Arguments = { amount?: Long, path?: String, owner?: String, repo?: String };\n"

ALLOWLIST = """
default_scopes = ["tools:call"]
"""


def policies(now: float) -> str:
    """The worked example: an amount limit, a path prefix, per-user ownership and a time window."""
    start, end = int(now) - 3600, int(now) + 3600
    return f"""// Transfers up to 100.
@id("transfer-limit")
forbid (principal, action == Action::"tools/call", resource == Tool::"everything/transfer")
when {{ context.arguments has amount && context.arguments.amount > 100 }};

// Only files under /public/, and no dot-segments.
@id("public-files-only")
permit (principal, action == Action::"tools/call", resource == Tool::"everything/read_file")
when {{
  context.arguments has path &&
  context.arguments.path like "/public/*" &&
  !(context.arguments.path like "*..*")
}};

// A repository is read only by the user it belongs to.
@id("own-repos-only")
forbid (principal, action == Action::"tools/call", resource == Tool::"everything/read_repo")
unless {{ principal has user && context.arguments has owner && context.arguments.owner == principal.user }};

// Deploys inside the change window only.
@id("deploy-window")
permit (principal, action == Action::"tools/call", resource == Tool::"everything/deploy")
when {{ context.now >= {start} && context.now < {end} }};

// Reports only in a window that is over.
@id("report-window")
permit (principal, action == Action::"tools/call", resource == Tool::"everything/report")
when {{ context.now >= {start - 86400} && context.now < {end - 86400} }};
"""


def bank_server() -> Any:
    server = MCPServer(name="bank", version="0.1.0", log_level="WARNING")

    @server.tool()
    async def transfer(amount: float, to: str = "savings") -> str:
        return f"moved {amount} to {to}"

    @server.tool()
    async def read_file(path: str) -> str:
        return f"contents of {path}"

    @server.tool()
    async def read_repo(owner: str, repo: str) -> str:
        return f"{owner}/{repo}"

    @server.tool()
    async def deploy() -> str:
        return "deployed"

    @server.tool()
    async def report() -> str:
        return "reported"

    @server.tool()
    async def echo(message: str) -> str:
        return message

    return server.streamable_http_app(streamable_http_path="/mcp", transport_security=loopback_security())


def write_policy_files(directory: Path, text: str, name: str = "policies") -> None:
    (directory / f"{name}.cedar").write_text(text)
    (directory / f"{name}.cedarschema").write_text(ARGUMENTS_SCHEMA)


@asynccontextmanager
async def cedar_stack(
    directory: Path, *, cedar: str | None = None, shadow: str | None = None, **options: Any
) -> AsyncIterator[Stack]:
    """The gateway with `[policy] cedar` (the worked example unless given) and optionally `shadow_cedar`."""
    write_policy_files(directory, cedar if cedar is not None else policies(time.time()))
    extra = '[policy]\ncedar = "policies.cedar"\n'
    if shadow is not None:
        write_policy_files(directory, shadow, "candidate")
        extra += 'shadow_cedar = "candidate.cedar"\n'
    async with gateway_stack(
        directory, allowlist=ALLOWLIST, upstream_app=bank_server(), gateway_extra=extra, **options
    ) as stack:
        yield stack
