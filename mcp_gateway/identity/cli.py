"""`mcp-gateway allowlist check|pin`: validate the allowlist and record what a live upstream presents."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2

from mcp_gateway.audit.safe_text import visible
from mcp_gateway.config import GatewayConfig, ServerEntry, load_config
from mcp_gateway.credentials.source import CredentialRequest, CredentialSource
from mcp_gateway.credentials.sources import build_credential_source, default_context
from mcp_gateway.errors import (
    CommandError,
    ConfigError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from mcp_gateway.identity.tls_pins import spki_sha256
from mcp_gateway.identity.tool_pins import tool_sha256

_PROTOCOL = "2025-11-25"


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    allowlist = subparsers.add_parser("allowlist", help="check the allowlist or pin a live server's identity")
    sub = allowlist.add_subparsers(dest="allowlist_command", required=True)
    check = sub.add_parser("check", help="load and validate the allowlist (confusables, pins, URLs)")
    check.add_argument("--config", default="./gateway.toml")
    check.set_defaults(func=run_check)
    pin = sub.add_parser("pin", help="fetch a server's TLS key and tool definitions and print their pins")
    pin.add_argument("name", help="the [servers.NAME] entry to pin")
    pin.add_argument("--config", default="./gateway.toml")
    pin.add_argument("--diff", action="store_true", help="show what changed against the current pins")
    pin.add_argument("--yes", action="store_true", help="write the new pins into the allowlist file")
    pin.set_defaults(func=run_pin)


def run_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for name, entry in sorted(config.servers.items()):
        scheme = urlsplit(entry.url).scheme
        key = f"{len(entry.tls_spki_sha256)} key pin(s)" if scheme == "https" else "loopback http"
        tools = f"{len(entry.tools_sha256)} tool pin(s)" if entry.tools_sha256 else "tools not pinned"
        print(f"{name:20} {entry.url}  [{key}; {tools}]")
    print(f"OK: {len(config.servers)} servers, no confusable entries, policy version {config.policy_version[:12]}")
    return 0


def run_pin(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    entry = config.servers.get(args.name)
    if entry is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise CommandError(
            f"no [servers.{args.name}] in {config.path_for(config.allowlist)} (servers: {known}); "
            "pass one of those names"
        )
    try:
        # The very source `serve` uses, so every credential type works and a missing secret is named.
        source = build_credential_source(entry, os.environ, default_context(config.base_dir, config.public_url))
    except ConfigError as exc:
        raise ConfigError(exc.file, exc.key, f"{exc.problem}; set it, then run this command again") from exc
    spki, tools = asyncio.run(_observe_or_explain(config, entry, source))
    pins = {tool["name"]: tool_sha256(tool) for tool in tools if isinstance(tool.get("name"), str)}
    if args.diff:
        for line in pin_diff(entry, spki, pins):
            print(line)
    snippet = render_pins(args.name, spki, pins)
    print(snippet)
    if args.yes:
        path = config.path_for(config.allowlist)
        path.write_text(rewrite_allowlist(path.read_text("utf-8"), args.name, spki, pins), "utf-8")
        print(f"wrote the pins into {path}", file=sys.stderr)
    return 0


async def _observe_or_explain(
    config: GatewayConfig, entry: ServerEntry, source: CredentialSource
) -> tuple[str | None, list[dict[str, Any]]]:
    """`_observe`, with every way the upstream can fail turned into an error that names it and the fix."""
    where = f"servers.{entry.name} at {entry.url}"
    try:
        return await _observe(config, entry, source)
    except httpx2.TimeoutException as exc:
        raise UpstreamTimeout(f"{where} did not answer in time ({type(exc).__name__}); is it running?") from exc
    except httpx2.HTTPStatusError as exc:
        raise UpstreamProtocolError(
            f"{where} answered HTTP {exc.response.status_code}; check the URL and the credentials it expects"
        ) from exc
    except (httpx2.TransportError, OSError) as exc:
        raise UpstreamConnectError(
            f"cannot reach {where} ({type(exc).__name__}: {exc}); is it running, and is the URL right?"
        ) from exc
    except ValueError as exc:  # a body that is not JSON
        raise UpstreamProtocolError(f"{where} did not answer with MCP JSON ({exc})") from exc
    finally:
        await source.aclose()


def pin_diff(entry: ServerEntry, spki: str | None, pins: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    if spki is not None and spki not in entry.tls_spki_sha256:
        lines.append(f"~ tls key: presented {spki}, pinned {list(entry.tls_spki_sha256)}")
    old = entry.tools_sha256
    # Tool names are the upstream's words: escaped, so they cannot drive the admin's terminal.
    lines += [f"+ {visible(name)} (new tool; quarantined until pinned)" for name in sorted(set(pins) - set(old))]
    lines += [f"- {visible(name)} (no longer offered)" for name in sorted(set(old) - set(pins))]
    lines += [
        f"~ {visible(name)}: {old[name]} -> {pins[name]} (definition changed)"
        for name in sorted(set(old) & set(pins))
        if old[name] != pins[name]
    ]
    return lines or ["= nothing changed"]


def render_pins(name: str, spki: str | None, pins: Mapping[str, str]) -> str:
    lines = []
    if spki is not None:
        lines.append(f'# [servers.{name}] tls_spki_sha256 = ["{spki}"]')
    lines.append(f"[servers.{name}.tools_sha256]")
    lines += [f"{json.dumps(tool)} = {json.dumps(digest)}" for tool, digest in sorted(pins.items())]
    return "\n".join(lines)


def rewrite_allowlist(text: str, name: str, spki: str | None, pins: Mapping[str, str]) -> str:
    """Replace the server's tools_sha256 table (and its key pin line) in place; other text is kept."""
    header = re.compile(r"^\s*\[")
    table = f"[servers.{name}.tools_sha256]"
    lines = text.splitlines()
    out: list[str] = []
    skipping = False
    in_server = False
    for line in lines:
        stripped = line.strip()
        if header.match(line):
            skipping = stripped == table
            in_server = stripped == f"[servers.{name}]"
            if skipping:
                continue
        if skipping:
            continue
        if in_server and spki is not None and stripped.startswith("tls_spki_sha256"):
            line = f'tls_spki_sha256 = ["{spki}"]'
        out.append(line)
    block = render_pins(name, None, pins).splitlines()
    return "\n".join([*out, "", *block]) + "\n"


async def _observe(
    config: GatewayConfig, entry: ServerEntry, source: CredentialSource
) -> tuple[str | None, list[dict[str, Any]]]:
    parts = urlsplit(entry.url)
    context: ssl.SSLContext | None = None
    spki = None
    if parts.scheme == "https":
        cafile = str(config.path_for(entry.ca_bundle)) if entry.ca_bundle else None
        context = ssl.create_default_context(cafile=cafile)
        spki = await _presented_spki(parts.hostname or "", parts.port or 443, context)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    # The credential a plain call would carry (a token endpoint's, an assertion's, a rotated file's).
    request = CredentialRequest(
        server=entry.name, upstream_url=entry.url, principal=None, method="tools/list", name=None, scopes=()
    )
    for name, value in (await source.issue(request)).headers:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    verify: ssl.SSLContext | bool = context if context is not None else True
    async with httpx2.AsyncClient(headers=headers, timeout=15, verify=verify, follow_redirects=False) as http:
        init = await _rpc(http, entry.url, "initialize", 1, {
            "protocolVersion": _PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "mcp-gateway-pin", "version": "0"},
        })  # fmt: skip
        session = init.headers.get("mcp-session-id")
        if session:
            http.headers["mcp-session-id"] = session
        http.headers["mcp-protocol-version"] = _PROTOCOL
        await http.post(entry.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for page in range(2, 1002):
            params = {"cursor": cursor} if cursor else {}
            result = _result(await _rpc(http, entry.url, "tools/list", page, params), page)
            tools += [tool for tool in result.get("tools", []) if isinstance(tool, dict)]
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        if session:
            await http.delete(entry.url)
    return spki, tools


async def _presented_spki(host: str, port: int, context: ssl.SSLContext) -> str:
    _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return spki_sha256(der)
    finally:
        writer.close()


async def _rpc(http: httpx2.AsyncClient, url: str, method: str, ident: int, params: dict[str, Any]) -> httpx2.Response:
    response = await http.post(url, json={"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
    response.raise_for_status()
    return response


def _result(response: httpx2.Response, ident: int) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                try:
                    message = json.loads(line[5:])
                except ValueError:
                    continue  # priming events and keep-alives carry no JSON
                if isinstance(message, dict) and message.get("id") == ident:
                    return _unwrap(message)
        raise UpstreamProtocolError("the upstream's SSE answer carried no response to tools/list")
    return _unwrap(response.json())


def _unwrap(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or not isinstance(message.get("result"), dict):
        raise UpstreamProtocolError(f"the upstream answered with an error: {str(message)[:200]}")
    result: dict[str, Any] = message["result"]
    return result
