"""`mcp-gateway doctor`: checks a configuration against the live world, without serving, one line per check.

config valid → token keys (JWKS, or the introspection endpoint) reachable and usable → clock skew against
the issuer (its HTTP `Date`) → every upstream reachable, presenting its pinned TLS key and tool definitions
(the same observation `allowlist pin` makes) → audit store opens and is writable → PostgreSQL and Redis
answer when configured. Exit 1 if any check fails; nothing is changed anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2

from mcp_gateway.auth.jwks import metadata_urls, parse_jwk
from mcp_gateway.config import AuthConfig, GatewayConfig, ServerEntry, load_config
from mcp_gateway.errors import ConfigError

_TIMEOUT = 5.0
_POSTGRES_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")  # PostgreSQL protocol §53.2.10


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<24} {self.detail}"


async def run_checks(config: GatewayConfig, *, now: Callable[[], float] = time.time) -> list[Check]:
    """Every check for a loaded config, in order (the config check itself is the caller's)."""
    checks: list[Check] = []
    async with httpx2.AsyncClient(timeout=_TIMEOUT, follow_redirects=False) as http:
        if config.auth is not None:
            checks += await _auth_checks(config.auth, http, now)
        else:
            checks.append(Check("auth", False, "no [auth] table: the gateway refuses to run open"))
        for name, entry in sorted(config.servers.items()):
            checks.append(await _guarded(f"upstream {name}", _upstream(config, entry)))
    checks.append(await _guarded("audit store", _audit(config)))
    if config.audit.url is not None and urlsplit(config.audit.url).scheme.startswith("postgres"):
        checks.append(await _guarded("postgresql", postgres_reachable(config.audit.url)))
    redis_url = getattr(config.rate_limits, "redis_url", None)
    if isinstance(redis_url, str):
        checks.append(await _guarded("redis", redis_reachable(redis_url)))
    return checks


async def _guarded(name: str, check: Awaitable[str]) -> Check:
    """Run one check with a deadline; any failure becomes a FAIL line naming what went wrong."""
    try:
        async with asyncio.timeout(_TIMEOUT * 3):
            return Check(name, True, await check)
    except TimeoutError:
        return Check(name, False, "no answer in time")
    except (Exception, SystemExit) as exc:  # the pin observer exits on an upstream error answer
        return Check(name, False, _why(exc))


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


# -- token keys and the clock ----------------------------------------------------------------------


async def _auth_checks(auth: AuthConfig, http: httpx2.AsyncClient, now: Callable[[], float]) -> list[Check]:
    dates: list[str] = []
    checks = []
    if auth.introspection_endpoint is not None:
        checks.append(await _guarded("introspection", _introspection(auth, http, dates)))
    if auth.jwks_uri is not None or auth.introspection_endpoint is None:
        checks.append(await _guarded("token keys (JWKS)", _jwks(auth, http, dates)))
    checks.append(_clock(auth, dates, now))
    return checks


async def _jwks(auth: AuthConfig, http: httpx2.AsyncClient, dates: list[str]) -> str:
    uri = auth.jwks_uri or await _discovered_jwks_uri(auth.issuer, http, dates)
    try:
        response = await http.get(uri, headers={"accept": "application/json"})
    except httpx2.HTTPError as exc:
        raise RuntimeError(f"{uri}: unreachable ({_why(exc)})") from exc
    _note_date(response, dates)
    if response.status_code != 200:
        raise RuntimeError(f"{uri} answered HTTP {response.status_code}")
    document = response.json()
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise RuntimeError(f"{uri} is not a JWK Set (no keys array)")
    allowed = frozenset(auth.algorithms)
    usable = [key for key in keys if parse_jwk(key, allowed) is not None]
    if not usable:
        raise RuntimeError(f"{uri} has {len(keys)} key(s), none usable with algorithms {sorted(allowed)}")
    return f"{uri}: {len(usable)} of {len(keys)} key(s) usable with {', '.join(auth.algorithms)}"


async def _discovered_jwks_uri(issuer: str, http: httpx2.AsyncClient, dates: list[str]) -> str:
    for url in metadata_urls(issuer):
        response = await http.get(url, headers={"accept": "application/json"})
        _note_date(response, dates)
        if response.status_code == 200:
            uri = response.json().get("jwks_uri")
            if isinstance(uri, str):
                return uri
    raise RuntimeError(f"no jwks_uri configured and none discovered from {issuer}")


async def _introspection(auth: AuthConfig, http: httpx2.AsyncClient, dates: list[str]) -> str:
    assert auth.introspection_endpoint is not None
    secret = os.environ.get(auth.client_secret_env or "", "")
    if auth.client_secret_env and not secret:
        raise RuntimeError(f"environment variable {auth.client_secret_env} is not set")
    response = await http.post(
        auth.introspection_endpoint,
        data={"token": "mcp-gateway-doctor-probe", "token_type_hint": "access_token"},
        auth=(auth.client_id or "", secret),
        headers={"accept": "application/json"},
    )
    _note_date(response, dates)
    if response.status_code != 200:
        status = response.status_code
        raise RuntimeError(f"{auth.introspection_endpoint} answered HTTP {status} (client credentials?)")
    body = response.json()
    if not isinstance(body, dict) or body.get("active") is not False:
        raise RuntimeError('the endpoint did not answer a made-up token with {"active": false} (RFC 7662 §2.2)')
    return f"{auth.introspection_endpoint}: answers as RFC 7662 requires"


def _note_date(response: httpx2.Response, dates: list[str]) -> None:
    date = response.headers.get("date")
    if date:
        dates.append(date)


def _clock(auth: AuthConfig, dates: list[str], now: Callable[[], float]) -> Check:
    if not dates:
        return Check("clock skew", False, "the issuer's endpoints sent no Date header to compare with")
    try:
        theirs = parsedate_to_datetime(dates[-1]).timestamp()
    except (TypeError, ValueError):
        return Check("clock skew", False, f"unreadable Date header {dates[-1]!r}")
    skew = now() - theirs
    # Date has one-second resolution: a second either way is no evidence of skew.
    ok = abs(skew) <= max(1.0, auth.leeway_seconds)
    return Check("clock skew", ok, f"{skew:+.0f} s against the issuer (leeway_seconds = {auth.leeway_seconds})")


# -- upstreams -----------------------------------------------------------------------------------------


async def _upstream(config: GatewayConfig, entry: ServerEntry) -> str:
    from mcp_gateway.credentials.sources import build_credential_source, default_context
    from mcp_gateway.identity.cli import _observe_or_explain  # what `allowlist pin` observes, the same way
    from mcp_gateway.identity.tool_pins import tool_sha256

    source = build_credential_source(entry, os.environ, default_context(config.base_dir, config.public_url))
    spki, tools = await _observe_or_explain(config, entry, source)
    problems = []
    if spki is not None and spki not in entry.tls_spki_sha256:
        problems.append(f"TLS key {spki} is not pinned")
    if entry.tools_sha256:
        pinned = entry.tools_sha256
        seen = {tool["name"]: tool_sha256(tool) for tool in tools if isinstance(tool.get("name"), str)}
        problems += [
            f"{name}: definition changed (pinned {pinned[name][:12]}…, presented {seen[name][:12]}…)"
            for name in sorted(set(pinned) & set(seen))
            if pinned[name] != seen[name]
        ]
        if gone := sorted(set(pinned) - set(seen)):
            problems.append(f"pinned but no longer offered: {', '.join(gone)}")
        if new := sorted(set(seen) - set(pinned)):
            problems.append(f"{len(new)} tool(s) not pinned (quarantined): {', '.join(new)}")
    if problems:
        raise RuntimeError(f"{entry.url}: " + "; ".join(problems) + " (see `mcp-gateway allowlist pin --diff`)")
    what = [f"{len(tools)} tool(s)"]
    if spki is not None:
        what.append("TLS key pinned")
    if entry.tools_sha256:
        what.append("tool pins match")
    return f"{entry.url}: {', '.join(what)}"


# -- stores ------------------------------------------------------------------------------------------


async def _audit(config: GatewayConfig) -> str:
    from mcp_gateway.audit.stores import audit_location, open_audit_store

    if not config.audit.enabled:
        raise RuntimeError("[audit] enabled = false: no tool call would be recorded")
    location = audit_location(url=config.audit.url, database=config.audit.database, base_dir=config.base_dir)
    if location.scheme == "sqlite":
        _writable(location.target)
    sink = open_audit_store(config)
    await sink.start()  # opens the store and continues its chain, as `serve` does; writes no record
    await sink.aclose()
    return f"{location.scheme} store opens and is writable"


def _writable(path: str) -> None:
    target = path if os.path.exists(path) else os.path.dirname(os.path.abspath(path))
    if not os.access(target, os.W_OK):
        raise RuntimeError(f"{target} is not writable by this user")


async def postgres_reachable(url: str) -> str:
    """A PostgreSQL server answers an SSLRequest with one byte, 'S' or 'N', before any authentication."""
    host, port = _host_port(url, 5432)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _TIMEOUT)
    try:
        writer.write(_POSTGRES_SSL_REQUEST)
        answer = await asyncio.wait_for(reader.read(1), _TIMEOUT)
    finally:
        writer.close()
    if answer not in (b"S", b"N"):
        raise RuntimeError(f"{host}:{port} does not speak the PostgreSQL protocol")
    return f"{host}:{port} answers (TLS {'offered' if answer == b'S' else 'not offered'})"


async def redis_reachable(url: str) -> str:
    """`PING` in RESP; `+PONG` (or an authentication error, which proves a Redis is there but refuses us)."""
    host, port = _host_port(url, 6379)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        host, port = parts.path, 0
        opening = asyncio.open_unix_connection(parts.path)
    else:
        opening = asyncio.open_connection(host, port, ssl=True if parts.scheme == "rediss" else None)
    reader, writer = await asyncio.wait_for(opening, _TIMEOUT)
    try:
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        answer = await asyncio.wait_for(reader.readline(), _TIMEOUT)
    finally:
        writer.close()
    if answer.startswith(b"+PONG"):
        return f"{host}:{port} answers PING"
    if answer.startswith(b"-NOAUTH"):
        raise RuntimeError(f"{host}:{port} needs authentication that the URL does not give")
    raise RuntimeError(f"{host}:{port} does not answer PING like Redis")


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


# -- the command ------------------------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(Check("config", False, str(exc)).line())
        return 1
    summary = f"{args.config}: {len(config.servers)} server(s), policy {config.policy_version[:12]}"
    print(Check("config", True, summary).line())
    failed = False
    for check in asyncio.run(run_checks(config)):
        print(check.line(), flush=True)
        failed = failed or not check.ok
    return 1 if failed else 0


def add_commands(sub: Any) -> None:
    command = sub.add_parser("doctor", help="check a configuration against the live world, without serving")
    command.add_argument("--config", default="./gateway.toml", help="path to gateway.toml")
    command.set_defaults(func=_doctor)
