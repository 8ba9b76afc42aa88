"""Tool-call arguments against the pinned tool's `inputSchema` (JSON Schema 2020-12 by default).

SECURITY.md: "Tool-call arguments that do not validate against the pinned input schema: refused, not
forwarded." Each pinned definition is compiled once (jsonschema-rs: ~0.5 µs per validation of a small
schema, against ~60 µs for the pure-Python `jsonschema`), and validating is a pure function of the
arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs

# MCP 2025-11-25 §Tools / JSON Schema usage: a schema without `$schema` is JSON Schema 2020-12.
_DEFAULT_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """Why arguments break a schema: where (a JSON pointer into the arguments) and which rule."""

    pointer: str
    rule: str
    schema_pointer: str

    def message(self, tool: str) -> str:
        # RFC 6901: the empty pointer is the whole document (the arguments object itself).
        return (
            f"Invalid params: arguments of tool {tool!r} break its input schema at {self.pointer!r}: "
            f"rule {self.rule!r} (schema {self.schema_pointer!r})"
        )


def _no_remote(uri: str) -> Any:
    # A schema is the upstream's text: its `$ref`s are never fetched (no outbound request the allowlist
    # did not name); only references inside the schema itself (`#/$defs/...`) resolve.
    raise ValueError(f"remote reference {uri!r} is not resolved")


def _pointer(path: Any) -> str:
    # RFC 6901 §3: '~' is escaped as '~0' and '/' as '~1' in each reference token.
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


class ArgumentSchema:
    """One compiled `inputSchema`; `strict` also refuses properties the schema does not declare."""

    __slots__ = ("_validator",)

    def __init__(self, schema: Any, *, strict: bool = False) -> None:
        if not isinstance(schema, dict):
            raise ValueError("inputSchema must be a JSON object")
        if strict:
            # JSON Schema 2020-12 §11.3: unevaluatedProperties sees through allOf/$ref/if-then, so a
            # property is "declared" wherever the schema evaluates it.
            schema = {**schema, "unevaluatedProperties": False}
        if "$schema" not in schema:
            schema = {**schema, "$schema": _DEFAULT_DIALECT}
        try:
            self._validator = jsonschema_rs.validator_for(schema, retriever=_no_remote)
        except (ValueError, jsonschema_rs.ReferencingError) as exc:  # an invalid schema, or a remote $ref
            raise ValueError(f"inputSchema does not compile: {str(exc).splitlines()[0]}") from exc

    def violation(self, arguments: Any) -> SchemaViolation | None:
        """The first rule `arguments` break, or None when they validate."""
        if self._validator.is_valid(arguments):
            return None  # the common case, without building an error
        error = next(iter(self._validator.iter_errors(arguments)), None)
        if error is None:
            return None
        schema_path = list(error.schema_path)
        rule = str(schema_path[-1]) if schema_path else "schema"
        return SchemaViolation(_pointer(error.instance_path), rule, _pointer(schema_path))
