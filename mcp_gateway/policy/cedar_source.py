"""Reading a Cedar policy file once: parse, require an `@id` per policy, validate against the entity model.

Every mistake is a `ConfigError` naming `FILE:LINE`, the policy and what is wrong, and the gateway does not
start. cedarpy reports parse and validation errors without positions, so the file is cut into statements
here (at each `;` outside strings and comments) and each error is placed at its statement's first line:
a parse error by parsing statements one by one, a validation error by the policy's position (Cedar names
the n-th policy of a file `policy<n>`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import cedarpy

from mcp_gateway.errors import ConfigError

__all__ = ["CedarSource", "Statement", "base_schema_text", "load_cedar_source", "split_statements"]

_DEFAULT_ARGUMENTS: Final = "type Arguments = {};\n"
_DECLARES_ARGUMENTS: Final = re.compile(r"\btype\s+Arguments\b")
_POSITIONAL: Final = re.compile(r"policy(\d+)")
_QUOTED_ID: Final = re.compile(r"`(policy\d+)`")


@dataclass(frozen=True, slots=True)
class Statement:
    """One policy's text and the 1-based line it starts on."""

    text: str
    line: int


@dataclass(frozen=True, slots=True)
class CedarSource:
    """A parsed, validated policy file: the engine's handle, each policy's EST and `@id`, and its line."""

    file: str
    policy_set: cedarpy.PolicySet
    policies: dict[str, dict[str, Any]]  # Cedar's positional id → its JSON (EST) form
    ids: dict[str, str]  # positional id → @id
    lines: dict[str, int]  # positional id → first line


def split_statements(text: str) -> list[Statement]:
    """The file's statements, each from its first token to a `;` outside a string or a `//` comment (a tail
    without one too)."""
    out: list[Statement] = []
    start: int | None = None  # where the current statement's first token is
    start_line = line = 1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if start is None and not ch.isspace():
            start, start_line = i, line
        if ch == "\n":
            line += 1
        elif ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif ch == ";" and start is not None:
            out.append(Statement(text[start : i + 1], start_line))
            start = None
        i += 1
    if start is not None:
        out.append(Statement(text[start:], start_line))
    return out


def base_schema_text() -> str:
    """The shipped entity model (`schema.cedarschema`), without `Arguments`."""
    return resources.files("mcp_gateway.policy").joinpath("schema.cedarschema").read_text(encoding="utf-8")


def _schema_for(path: Path) -> tuple[str, str]:
    """The schema the file is validated against: the shipped model plus `<stem>.cedarschema` beside it."""
    extension = path.with_suffix(".cedarschema")
    text = base_schema_text()
    if extension.is_file():
        extra = extension.read_text(encoding="utf-8")
        text += "\n" + extra + ("" if _DECLARES_ARGUMENTS.search(extra) else "\n" + _DEFAULT_ARGUMENTS)
        shown = str(extension)
    else:
        text += "\n" + _DEFAULT_ARGUMENTS
        shown = "the shipped schema"
    try:
        cedarpy.Schema.from_str(text)
    except ValueError as exc:
        raise ConfigError(shown, "(schema)", f"not a valid Cedar schema: {exc}") from None
    return text, shown


def load_cedar_source(path: Path) -> tuple[CedarSource, str]:
    """Parse and validate the policy file at `path`; returns it and the schema text it was validated with."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc}") from exc
    statements = split_statements(text)
    file = str(path)
    try:
        policy_set = cedarpy.PolicySet.from_str(text)
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise _parse_error(file, statements, str(exc)) from None
    templates = est.get("templates") or {}
    if templates:
        position = _position(next(iter(templates)))
        where = f"{file}:{_line(statements, position)}"
        raise ConfigError(where, "policy", "templates (?principal, ?resource) are not supported")
    policies: dict[str, dict[str, Any]] = est.get("staticPolicies") or {}
    ids: dict[str, str] = {}
    lines: dict[str, int] = {}
    seen: dict[str, int] = {}
    for positional, policy in policies.items():
        line = _line(statements, _position(positional))
        lines[positional] = line
        policy_id = (policy.get("annotations") or {}).get("id")
        if not isinstance(policy_id, str) or not policy_id.strip():
            why = 'every policy needs an @id("...") annotation: refusals and the audit name it'
            raise ConfigError(f"{file}:{line}", "policy", why)
        if policy_id in seen:
            why = f"@id already used by the policy on line {seen[policy_id]}"
            raise ConfigError(f"{file}:{line}", f"policy {policy_id}", why)
        seen[policy_id] = line
        ids[positional] = policy_id
    schema_text, schema_name = _schema_for(path)
    result = cedarpy.validate_policies(text, schema_text)
    if not result.validation_passed:
        first = result.errors[0]
        positional = first.policy_id
        line = lines.get(positional, 1)
        message = _QUOTED_ID.sub(lambda m: f"`{ids.get(m.group(1), m.group(1))}`", first.error)
        name = ids.get(positional, positional)
        raise ConfigError(f"{file}:{line}", f"policy {name}", f"{message} (validated against {schema_name})")
    return CedarSource(file, policy_set, policies, ids, lines), schema_text


def _position(positional: str) -> int:
    match = _POSITIONAL.fullmatch(positional)
    return int(match.group(1)) if match else 0


def _line(statements: list[Statement], position: int) -> int:
    return statements[position].line if position < len(statements) else 1


def _parse_error(file: str, statements: list[Statement], message: str) -> ConfigError:
    for statement in statements:
        try:
            cedarpy.PolicySet.from_str(statement.text)
        except ValueError as exc:
            line = statement.line + _failing_line(statement.text)
            return ConfigError(f"{file}:{line}", "(syntax)", f"not a Cedar policy: {exc}")
    return ConfigError(f"{file}:1", "(syntax)", f"not a Cedar policy: {message}")


def _failing_line(text: str) -> int:
    """Lines after the statement's first before the one holding the error: the first prefix of the statement
    that fails for another reason than ending too early ends on that line."""
    lines = text.split("\n")
    for count in range(1, len(lines) + 1):
        try:
            cedarpy.PolicySet.from_str("\n".join(lines[:count]))
        except ValueError as exc:
            if "unexpected end of input" not in str(exc):
                return count - 1
    return 0
