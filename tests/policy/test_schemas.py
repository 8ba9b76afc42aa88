"""Tool-call arguments against a pinned inputSchema: JSON Schema 2020-12, $ref/$defs, strict mode, no remote refs."""

from __future__ import annotations

from typing import Any

import pytest

from examples.everything_server import JSON_SCHEMA_2020_12
from mcp_gateway.policy.schemas import ArgumentSchema, SchemaViolation

ECHO = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}


def test_arguments_that_validate_have_no_violation() -> None:
    assert ArgumentSchema(ECHO).violation({"message": "hi"}) is None
    assert ArgumentSchema(JSON_SCHEMA_2020_12).violation({"email": "a@example.com", "address": {"city": "x"}}) is None


@pytest.mark.parametrize(
    ("schema", "arguments", "expected"),
    [
        (ECHO, {"message": 5}, SchemaViolation("/message", "type", "/properties/message/type")),
        (ECHO, {}, SchemaViolation("", "required", "/required")),
        (ECHO, ["message"], SchemaViolation("", "type", "/type")),
        # $ref into $defs is followed (JSON Schema 2020-12 §8.2.3.1).
        (
            JSON_SCHEMA_2020_12,
            {"email": "a@example.com", "address": {"city": 5}},
            SchemaViolation("/address/city", "type", "/$defs/address/properties/city/type"),
        ),
        # Composition: neither phone nor email.
        (JSON_SCHEMA_2020_12, {"name": "n"}, SchemaViolation("", "anyOf", "/allOf/0/anyOf")),
        # additionalProperties: false, declared by the schema itself.
        (
            JSON_SCHEMA_2020_12,
            {"email": "e", "x": 1},
            SchemaViolation("", "additionalProperties", "/additionalProperties"),
        ),
    ],
)
def test_violation_names_the_json_pointer_and_the_rule(schema: Any, arguments: Any, expected: SchemaViolation) -> None:
    assert ArgumentSchema(schema).violation(arguments) == expected


def test_pointer_tokens_are_escaped_as_rfc_6901_says() -> None:
    schema = {"type": "object", "properties": {"a/b~c": {"type": "string"}}}
    violation = ArgumentSchema(schema).violation({"a/b~c": 1})
    assert violation is not None and violation.pointer == "/a~1b~0c"


def test_strict_mode_refuses_properties_the_schema_does_not_declare() -> None:
    assert ArgumentSchema(ECHO).violation({"message": "hi", "extra": 1}) is None
    strict = ArgumentSchema(ECHO, strict=True)
    assert strict.violation({"message": "hi", "extra": 1}) == SchemaViolation(
        "", "unevaluatedProperties", "/unevaluatedProperties"
    )
    assert strict.violation({"message": "hi"}) is None


def test_strict_mode_counts_properties_declared_through_composition() -> None:
    schema = {"type": "object", "allOf": [{"$ref": "#/$defs/base"}], "$defs": {"base": {"properties": {"a": {}}}}}
    strict = ArgumentSchema(schema, strict=True)
    assert strict.violation({"a": 1}) is None
    assert strict.violation({"a": 1, "b": 2}) is not None


def test_message_names_the_tool_the_pointer_and_the_rule() -> None:
    violation = SchemaViolation("/message", "type", "/properties/message/type")
    assert violation.message("echo") == (
        "Invalid params: arguments of tool 'echo' break its input schema at '/message': "
        "rule 'type' (schema '/properties/message/type')"
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://127.0.0.1:1/never-fetched.json"},
        {"type": 5},
        ["not", "an", "object"],
    ],
)
def test_a_schema_that_does_not_compile_or_refers_elsewhere_is_refused_without_fetching(schema: Any) -> None:
    with pytest.raises(ValueError, match="inputSchema"):
        ArgumentSchema(schema)
