from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.audit.canonical import canonical_record_bytes, canonical_record_text, chain_hash
from mcp_gateway.audit.record import (
    GENESIS_HASH,
    LATE_FIELDS,
    RECORD_FIELDS,
    AuditRecord,
    arguments_digest,
    arguments_json,
    format_timestamp,
    new_event_id,
    outcome_of,
    redact,
    storable,
)

from .conftest import BASE_TIME, make_record

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _as_jcs_object(record: AuditRecord, prev_hash: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = getattr(record, name)
        if value is None and name in LATE_FIELDS:
            continue  # fields added after schema 2 are members only when set
        out[name] = list(value) if isinstance(value, tuple) else value
    out["prev_hash"] = prev_hash
    return out


def test_the_record_keeps_the_contract_field_names() -> None:
    contract = {
        "timestamp", "event_id", "agent_id", "delegating_user", "session_id", "mcp_server", "method", "tool",
        "scope_granted", "scopes_required", "token_ttl", "token_id", "request_context", "decision",
        "policy_rule", "outcome", "http_status", "latency_ms", "arguments_sha256",
    }  # fmt: skip
    assert contract <= set(RECORD_FIELDS)


text = st.text(max_size=20)
optional_text = st.none() | text
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@given(
    timestamp=finite,
    agent=optional_text,
    tool=optional_text,
    scopes=st.lists(text, max_size=4).map(tuple),
    ttl=st.none() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    latency=st.none() | finite,
    context=optional_text,
)
def test_canonical_bytes_equal_the_rfc8785_serialization_of_the_record(
    timestamp: float,
    agent: str | None,
    tool: str | None,
    scopes: tuple[str, ...],
    ttl: int | None,
    latency: float | None,
    context: str | None,
) -> None:
    record = make_record(
        timestamp=timestamp,
        agent_id=agent,
        tool=tool,
        scope_granted=scopes,
        token_ttl=ttl,
        latency_ms=latency,
        request_context=context,
    )
    record = storable(record)
    assert canonical_record_bytes(record, GENESIS_HASH) == rfc8785.dumps(_as_jcs_object(record, GENESIS_HASH))


@pytest.mark.parametrize("value", [0.0, 1.0, 100.0, 1e21, 1.5e-7, 123456789012345.6, 1795867200.123, -0.25, 5e-324])
def test_canonical_numbers_follow_rfc8785_at_the_edges_of_the_fast_path(value: float) -> None:
    record = make_record(timestamp=value, latency_ms=value)
    assert canonical_record_bytes(record, GENESIS_HASH) == rfc8785.dumps(_as_jcs_object(record, GENESIS_HASH))


def test_chain_hash_is_sha256_of_the_canonical_bytes_and_depends_on_the_previous_hash() -> None:
    record = make_record()
    assert chain_hash(GENESIS_HASH, record) == hashlib.sha256(canonical_record_bytes(record, GENESIS_HASH)).hexdigest()
    assert chain_hash(GENESIS_HASH, record) != chain_hash("1" * 64, record)
    assert chain_hash(GENESIS_HASH, record) != chain_hash(GENESIS_HASH, dataclasses.replace(record, tool="echo2"))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("agent_id", 5, TypeError),
        ("token_ttl", "5", TypeError),
        ("token_ttl", True, TypeError),
        ("token_ttl", 2**60, ValueError),
        ("latency_ms", float("nan"), ValueError),
        ("scope_granted", ("a", 1), TypeError),
        ("event_id", None, TypeError),
        ("phase", "begin", ValueError),
        ("decision", "maybe", ValueError),
    ],
)
def test_fields_of_the_wrong_type_or_outside_json_cannot_be_hashed(field: str, value: object, error: type) -> None:
    record = dataclasses.replace(make_record(), **{field: value})  # type: ignore[arg-type]
    with pytest.raises(error):
        canonical_record_bytes(record, GENESIS_HASH)


def test_lone_surrogates_are_escaped_into_storable_text() -> None:
    record = make_record(tool="evil\ud800", scope_granted=("ok", "\udfff"))
    with pytest.raises(UnicodeEncodeError):
        canonical_record_bytes(record, GENESIS_HASH)
    fixed = storable(record)
    assert fixed.tool == "evil\\ud800"
    assert fixed.scope_granted == ("ok", "\\udfff")
    canonical_record_bytes(fixed, GENESIS_HASH)
    clean = make_record()
    assert storable(clean) is clean


def test_event_ids_are_uuid7_unique_and_ordered_by_millisecond() -> None:
    ids = [new_event_id(BASE_TIME + i / 1000) for i in range(200)]
    assert all(UUID7.match(i) for i in ids)
    assert ids == sorted(ids)
    assert len({new_event_id(BASE_TIME) for _ in range(1000)}) == 1000
    assert new_event_id(BASE_TIME)[:13] == "01a22206-ca00"


def test_timestamps_render_as_utc_iso_with_milliseconds() -> None:
    assert format_timestamp(1795867200.1239) == "2026-11-28T12:00:00.123Z"
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(-0.5) == "1969-12-31T23:59:59.500Z"


def test_arguments_digest_is_sha256_of_rfc8785_and_independent_of_key_order() -> None:
    args = {"b": [1, 2.5, "x"], "a": {"é": None, "z": True}}
    canonical = rfc8785.dumps(args)  # type: ignore[arg-type]
    assert arguments_digest(args) == hashlib.sha256(canonical).hexdigest()
    assert arguments_digest(args) == arguments_digest({"a": {"z": True, "é": None}, "b": [1, 2.5, "x"]})


def test_arguments_digest_treats_huge_integers_as_the_doubles_json_makes_them() -> None:
    # RFC 8785 canonicalizes the JSON text 12345678901234567890 as the double it denotes.
    assert arguments_digest({"n": 12345678901234567890}) == arguments_digest({"n": 1.2345678901234567e19})


def test_arguments_digest_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError):
        arguments_digest({"n": float("nan")})


def test_redaction_is_recursive_case_insensitive_and_matches_inside_key_names() -> None:
    args = {
        "Password": "hunter2",
        "query": "select 1",
        "nested": [{"X-Api-Key": "k1", "apiKey": "k2", "keep": 1}, "plain"],
        "access_token": {"deep": "t"},
    }
    out = redact(args, ["password", "api_key", "token"])
    assert out == {
        "Password": "[REDACTED]",
        "query": "select 1",
        "nested": [{"X-Api-Key": "[REDACTED]", "apiKey": "[REDACTED]", "keep": 1}, "plain"],
        "access_token": "[REDACTED]",
    }
    assert args["Password"] == "hunter2"  # the input is not modified


def test_redaction_truncates_absurd_nesting_instead_of_recursing_without_bound() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    out = redact(deep, ["secret"])
    for _ in range(64):
        out = out[0]  # type: ignore[index]
    assert out == "[TRUNCATED]"


def test_arguments_json_is_compact_and_redacted() -> None:
    assert arguments_json({"secret": "s", "n": 1}, ["secret"]) == '{"secret":"[REDACTED]","n":1}'


def test_outcome_of_names_its_intent_and_says_only_what_happened() -> None:
    intent = make_record(arguments='{"q":1}')
    outcome = outcome_of(intent, outcome="ok", timestamp=BASE_TIME + 1, http_status=200, latency_ms=12.5)
    assert (outcome.phase, outcome.event_id, outcome.timestamp) == ("outcome", intent.event_id, BASE_TIME + 1)
    assert (outcome.outcome, outcome.http_status, outcome.latency_ms) == ("ok", 200, 12.5)
    assert (outcome.mcp_server, outcome.method, outcome.tool) == (intent.mcp_server, intent.method, intent.tool)
    identity = ("agent_id", "delegating_user", "decision", "arguments", "arguments_sha256", "scope_granted")
    assert all(getattr(outcome, name) in (None, ()) for name in identity)


optional_int = st.none() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
number = st.floats(allow_nan=False, allow_infinity=False) | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
string_list = st.lists(text, max_size=3)
SPECIAL_FIELDS = {
    "event_id": text,
    "timestamp": number,
    "scope_granted": string_list.map(tuple) | string_list,
    "scopes_required": string_list.map(tuple),
    "token_ttl": optional_int,
    "http_status": optional_int,
    "latency_ms": st.none() | number,
    "decision": st.sampled_from([None, "allow", "deny", "step_up"]),
}
OPTIONAL_TEXT_FIELDS = {name: optional_text for name in RECORD_FIELDS if name not in {"phase", *SPECIAL_FIELDS}}


@given(
    data=st.fixed_dictionaries({**SPECIAL_FIELDS, **OPTIONAL_TEXT_FIELDS}),
    phase=st.sampled_from(["intent", "outcome", "event"]),
    prev_hash=text,
)
def test_every_shape_of_record_encodes_as_rfc8785_would(data: dict[str, Any], phase: str, prev_hash: str) -> None:
    # Records of one shape share a precomputed encoding; any shape, any value must still come out as RFC 8785.
    record = storable(AuditRecord(phase=phase, **data))  # type: ignore[arg-type]
    expected = rfc8785.dumps(_as_jcs_object(record, prev_hash))  # type: ignore[arg-type]
    assert canonical_record_bytes(record, prev_hash) == expected
    assert canonical_record_bytes(record, prev_hash) == expected  # and again, from the cached shape


def test_the_gateways_records_take_the_precomputed_encoding() -> None:
    from mcp_gateway.audit.canonical import _canonical_text_fast

    intent = make_record()
    outcome = outcome_of(intent, outcome="ok", timestamp=BASE_TIME + 0.25, http_status=200, latency_ms=0.731)
    for record in (intent, outcome, make_record("event", event_type="refusal", http_status=401)):
        assert _canonical_text_fast(record, GENESIS_HASH) is not None


@pytest.mark.parametrize(("field", "value"), [("scope_granted", ["a", 1]), ("token_ttl", True), ("tool", b"x")])
def test_a_value_of_the_wrong_type_is_refused_whatever_shape_the_record_has(field: str, value: object) -> None:
    record = dataclasses.replace(make_record(), **{field: value})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        canonical_record_bytes(record, GENESIS_HASH)


@pytest.mark.parametrize("value", [2.0, -0.0, 2.0**53, 1e-7, 2**60, -(2**53) + 1, 1e15 + 0.5])
def test_numbers_outside_the_precomputed_encoding_still_encode_as_the_doubles_rfc8785_sees(value: float) -> None:
    record = make_record(timestamp=value, latency_ms=value)
    as_doubles = dataclasses.replace(record, timestamp=float(value), latency_ms=float(value))
    assert canonical_record_bytes(record, GENESIS_HASH) == rfc8785.dumps(_as_jcs_object(as_doubles, GENESIS_HASH))


def test_fields_added_after_schema_2_are_members_only_when_set_so_older_records_keep_their_hash() -> None:
    from mcp_gateway.audit.chain import parse_record

    record = make_record()
    text = canonical_record_text(record, GENESIS_HASH)
    for name in LATE_FIELDS:
        assert f'"{name}"' not in text  # exactly the bytes a record written before the field existed has
    assert parse_record(text) == (record, GENESIS_HASH)
    later = dataclasses.replace(record, shadow_decision="deny:cedar:no-echo")
    later_text = canonical_record_text(later, GENESIS_HASH)
    assert '"shadow_decision":"deny:cedar:no-echo"' in later_text
    assert later_text == rfc8785.dumps(_as_jcs_object(later, GENESIS_HASH)).decode()
    assert parse_record(later_text) == (later, GENESIS_HASH)
