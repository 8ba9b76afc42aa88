"""Generate docs/configuration.md from the pydantic models in `mcp_gateway/config/`.

Every key of gateway.toml and server_allowlist.toml, with its type, default, bounds and description. A
description is the field's `Field(description=...)` when it has one, else the comment on the field's own
lines, else the comment block right above it (read from the module source with `ast` and `tokenize`), else
an entry of `SUPPLEMENT` below. A key with none of these stops the generator: every key is documented.

    python scripts/gen_config_docs.py            # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check    # exit 1 if it is stale (what the test does)
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"
REGENERATE = "scripts/gen-config-docs"

# Filled in by the loader, or the table key itself: not written by anyone in a file.
INTERNAL = frozenset({("GatewayConfig", "servers"), ("GatewayConfig", "base_dir"), ("GatewayConfig", "policy_version"),
                      ("GatewayConfig", "config_file"), ("ServerEntry", "name")})  # fmt: skip

# Descriptions of fields whose model carries no comment, by "ModelName.field". A comment on the field in
# its model takes precedence, so moving a description into the model needs no change here.
SUPPLEMENT: dict[str, str] = {
    "GatewayConfig.public_url": "The origin clients use; upstream NAME is served at `{public_url}/NAME/mcp`, "
    "and that exact string is the resource (token audience) of the route.",
    "GatewayConfig.host": "Address to bind (`0.0.0.0` in a container).",
    "GatewayConfig.port": "Port to bind.",
    "GatewayConfig.allowlist": "Path of server_allowlist.toml, relative to gateway.toml.",
    "GatewayConfig.max_body_bytes": "Largest request body accepted (larger: 413 before buffering), and largest "
    "JSON response read from an upstream.",
    "GatewayConfig.max_event_bytes": "Largest single SSE event relayed from an upstream (what is buffered).",
    "GatewayConfig.max_header_bytes": "Largest request header block accepted, and largest upstream response head.",
    "GatewayConfig.idle_connection_seconds": "A connection waiting for a request that sends no byte for this "
    "long is closed (per process).",
    "GatewayConfig.max_connections": "Open client connections per process; past it a new connection gets 503 "
    "with `Retry-After` and is closed.",
    "GatewayConfig.trusted_proxies": "Addresses of proxies whose `X-Forwarded-For`/`-Proto` are believed; "
    "empty: forwarded headers are ignored.",
    "AuthConfig.issuer": "The token issuer; must equal the token's `iss` exactly.",
    "AuthConfig.algorithms": "Signature algorithms accepted (asymmetric only; never `none` or HMAC).",
    "AuthConfig.leeway_seconds": "Clock skew tolerated on `exp`, `nbf` and `iat`.",
    "AuthConfig.max_token_lifetime_seconds": "Tokens whose `exp - iat` exceeds this are refused.",
    "AuthConfig.client_secret_env": "Environment variable holding the introspection client's secret.",
    "AuthConfig.introspection_cache_seconds": "How long an introspection answer is reused.",
    "AuthConfig.jwks_cache_seconds": "How long a fetched JWKS is used before it is refreshed.",
    "AuthConfig.jwks_refetch_cooldown_seconds": "Least time between two JWKS fetches caused by unknown `kid`s.",
    "AuthConfig.jwks_fetch_timeout_seconds": "Bound on one JWKS or discovery fetch.",
    "AuthConfig.max_token_bytes": "Longer bearer tokens are refused before any cryptography runs.",
    "AuthConfig.token_cache_size": "Verified tokens kept in memory, so a repeated token skips signature checks.",
    "AuditConfig.database": "SQLite file of the audit log, relative to gateway.toml (used when `url` is absent).",
    "AuditConfig.store_arguments": "Keep tool-call arguments in the record (redacted by `redact_keys`); "
    "otherwise only their SHA-256.",
    "AuditConfig.redact_keys": "Argument members whose name contains one of these (case-insensitive, ignoring "
    "`-` and `_`) are stored as `[REDACTED]`.",
    "AuditConfig.unauthenticated_summary_seconds": "Floods of refusals without a valid token are folded into one "
    "full record plus a summary record per window of this length.",
    "RateLimit.rate": "Tokens added to the bucket per second.",
    "RateLimit.burst": "Bucket size: the most calls allowed at once.",
    "RateLimits.per_agent": "A bucket per agent (token client).",
    "RateLimits.per_agent_tool": "A bucket per agent and tool.",
    "RateLimits.per_user": "A bucket per delegating user.",
    "ServerEntry.url": "The upstream's MCP endpoint; plain http only for loopback (or `allow_insecure_http`).",
    "ServerEntry.server_name": "Expected `serverInfo.name` (a check, not a proof).",
    "ServerEntry.tls_spki_sha256": "Base64 SHA-256 of the upstream certificate's SubjectPublicKeyInfo; "
    "required for https, checked at the handshake.",
    "ServerEntry.ca_bundle": "PEM CA bundle trusted for this upstream only (relative to gateway.toml).",
    "ServerEntry.allow_insecure_http": "Allow plain http to a non-loopback host.",
    "ServerEntry.authorization_server": "Authorization server advertised for this route's metadata "
    "(default: `[auth] authorization_servers`).",
    "ServerEntry.default_scopes": "Scopes for tools, resources and prompts without their own rule; "
    "absent: such operations are denied.",
    "ServerEntry.server_requests": "Server-to-client requests relayed to clients.",
    "ServerEntry.tool_scopes": "Tool name → scopes it needs.",
    "ServerEntry.resource_scopes": "Resource URI prefix → scopes (longest prefix wins).",
    "ServerEntry.prompt_scopes": "Prompt name → scopes it needs.",
    "ServerEntry.tools_sha256": "Pinned tool definitions: tool name → lowercase hex SHA-256 of its RFC 8785 "
    "JSON; a drifting or unlisted tool is quarantined once pins exist.",
    "ServerEntry.credentials": "What the gateway sends upstream (see `[servers.NAME.credentials]`).",
    "ServerEntry.acknowledge_confusable": "Names of other entries this one may look like (homoglyphs, small "
    "edits) on purpose.",
    "ServerEntry.connect_timeout_seconds": "Bound on opening a connection (and TLS handshake) to the upstream.",
    "ServerEntry.read_timeout_seconds": "Longest silence between two bytes from the upstream before the call fails.",
    "ServerEntry.max_connections": "Keep-alive connections to this upstream, per process.",
    "Credentials.type": "How the upstream credential is obtained.",
    "Credentials.token_env": "Environment variable holding the static token.",
    "Credentials.token_file": "File holding the static token (re-read when it changes).",
    "Credentials.client_id": "The gateway's client id at the upstream's authorization server.",
    "Credentials.client_secret_env": "Environment variable holding the client secret.",
    "Credentials.client_secret_file": "File holding the client secret.",
}


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    title: str  # "[auth]", "gateway.toml (top level)", "[servers.NAME.credentials]"
    intro: str
    keys: tuple[Key, ...]


def sections() -> list[Section]:
    """Every table of both files, top level first, then each sub-table in the order the models declare it."""
    from mcp_gateway.config import GatewayConfig, ServerEntry

    out: list[Section] = []
    _walk(GatewayConfig, "gateway.toml: top level", "", out)
    _walk(ServerEntry, "[servers.NAME]", "servers.NAME", out)
    return out


def _walk(model: type[BaseModel], title: str, path: str, out: list[Section]) -> None:
    keys: list[Key] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        if (model.__name__, name) in INTERNAL:
            continue
        annotation = _strip_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        keys.append(Key(name, _type_name(info.annotation), _default(info), _description(model, name, info)))
    out.append(Section(title, _docstring(model), tuple(keys)))
    for name, sub in nested:
        sub_path = f"{path}.{name}" if path else name
        _walk(sub, f"[{sub_path}]", sub_path, out)


def _strip_optional(annotation: Any) -> Any:
    if _is_union(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if _is_union(annotation):
        names = [_type_name(a) for a in args if a is not type(None)]
        optional = len(names) < len(args)
        return " or ".join(names) + (" (optional)" if optional else "")
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin is tuple:
        return f"array of {_plural(_type_name(args[0]))}"
    if origin in (dict, Mapping, typing.Mapping) or (origin is not None and _is_mapping(origin)):
        return f"table: name → {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = ", ".join(annotation.model_fields)
        return f"table {{ {fields} }}"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _plural(name: str) -> str:
    return name + "s" if name in ("string", "integer", "number", "boolean") else name


def _default(info: FieldInfo) -> str:
    bounds = _bounds(info)
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required" + bounds
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(defaults below)" + bounds
        return ("(none)" if value == {} else _toml(value)) + bounds
    if info.default is None:
        return "(absent)" + bounds
    return _toml(info.default) + bounds


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥")):
            value = getattr(item, attr, None)
            if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                parts.append(f"{symbol} {_toml(value)}")
    return f"; {', '.join(parts)}" if parts else ""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(json.dumps(v) for v in value) + "]`"
    if isinstance(value, float) and value.is_integer():
        return f"`{value:.1f}`"
    return f"`{value}`"


def _docstring(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _description(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    if info.description:
        return _cell(info.description)
    owner = next(c for c in model.__mro__ if name in inspect.get_annotations(c))
    comment = _source_comments(owner).get(name)
    if comment:
        return _cell(comment)
    return _cell(SUPPLEMENT.get(f"{owner.__name__}.{name}", SUPPLEMENT.get(f"{model.__name__}.{name}", "")))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


@cache
def _source_comments(owner: type) -> dict[str, str]:
    """Field name → its comment: the one on the field's own lines, else the comment block right above it."""
    module = sys.modules[owner.__module__]
    source = inspect.getsource(module)
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if not text.startswith(("fmt:", "noqa", "type:")):
                comments[token.start[0]] = text
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.ClassDef) and node.name == owner.__name__):
            continue
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                end = statement.end_lineno or statement.lineno
                own = [comments[n] for n in range(statement.lineno, end + 1) if n in comments]
                out[statement.target.id] = " ".join(own) or " ".join(_block_above(lines, comments, statement.lineno))
    return out


def _block_above(lines: list[str], comments: dict[int, str], lineno: int) -> Iterator[str]:
    # Only whole-line comments count: the line above may be another field with a trailing comment of its own.
    start = lineno
    while start > 1 and lines[start - 2].strip().startswith("#"):
        start -= 1
    return (comments[n] for n in range(start, lineno) if n in comments)


def render(all_sections: list[Section]) -> str:
    missing = [f"{s.title} {k.name}" for s in all_sections for k in s.keys if not k.description]
    if missing:
        raise SystemExit(
            "no description for: " + ", ".join(missing) + " — add a trailing `# comment` on the field in its model "
            "(or Field(description=...))"
        )
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated by {REGENERATE} from the models in mcp_gateway/config/. Do not edit by hand. -->",
        "",
        "Two files configure the gateway: `gateway.toml` (how it serves, authenticates, audits and limits) and",
        "the allowlist it names, `server_allowlist.toml` (which upstreams exist and what each operation needs).",
        "Both are loaded once and validated strictly: an unknown key, a wrong type or a value out of bounds stops",
        "start-up with the file, the key and the fix (`mcp-gateway check-config --config gateway.toml`).",
        "Relative paths resolve against the directory of `gateway.toml`. Names ending in `_env` name an",
        "environment variable that holds a secret; the secret itself is never written in these files.",
        "",
        "A table written as `[a.b]` can also be written inline, `b = { key = value }`, inside `[a]`.",
        "",
    ]
    for section in all_sections:
        if section.title == "[servers.NAME]":
            out += ["## server_allowlist.toml", "", "One `[servers.NAME]` table per upstream; NAME is the route.", ""]
        elif section.title.startswith("gateway.toml"):
            out += ["## gateway.toml", ""]
        out += [f"### {section.title}", ""]
        if section.intro:
            out += [section.intro, ""]
        if section.keys:
            out += ["| key | type | default | description |", "|---|---|---|---|"]
            out += [f"| `{k.name}` | {k.type} | {k.default} | {k.description} |" for k in section.keys]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render(sections())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
