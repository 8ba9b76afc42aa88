"""Audit records as values, and the pure functions that identify, digest, redact and chain them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Final, Literal

import rfc8785

Phase = Literal["intent", "outcome", "event"]
Decision = Literal["allow", "deny", "step_up"]

GENESIS_HASH: Final = "0" * 64
REDACTED: Final = "[REDACTED]"
TRUNCATED: Final = "[TRUNCATED]"
_MAX_REDACT_DEPTH: Final = 64
# RFC 8785 §3.2.2.3: numbers are IEEE 754 doubles, so integers are exact only within ±(2**53 - 1).
_JCS_INT_MAX: Final = 2**53 - 1


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record. A tool call writes an "intent" before forwarding and an "outcome" after,
    sharing `event_id`; anything else worth auditing (identity mismatches, quarantines, summaries)
    is a single "event"."""

    phase: Phase
    timestamp: float  # epoch seconds
    event_id: str
    agent_id: str | None = None
    delegating_user: str | None = None
    session_id: str | None = None
    mcp_server: str | None = None
    method: str | None = None
    tool: str | None = None
    scope_granted: tuple[str, ...] = ()
    scopes_required: tuple[str, ...] = ()
    token_ttl: int | None = None
    token_id: str | None = None  # the token's jti or a hash of it; never the token itself
    request_context: str | None = None
    decision: Decision | None = None
    policy_rule: str | None = None
    policy_version: str | None = None
    outcome: str | None = None
    http_status: int | None = None
    latency_ms: float | None = None
    arguments_sha256: str | None = None
    arguments: str | None = None  # redacted JSON text, only when [audit] store_arguments is on
    client_address: str | None = None
    upstream_identity: str | None = None
    event_type: str | None = None
    detail: str | None = None  # JSON text
    shadow_decision: str | None = None  # "KIND:RULE" of a shadow policy (`[policy] shadow_cedar`) that disagreed


RECORD_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(AuditRecord))

# How each field is typed on disk and in the canonical form: str, optional str, int, float, string list.
_Kind = Literal["str", "str?", "int?", "float", "float?", "list"]
_KINDS: Final[dict[str, _Kind]] = {
    "phase": "str",
    "timestamp": "float",
    "event_id": "str",
    "scope_granted": "list",
    "scopes_required": "list",
    "token_ttl": "int?",
    "http_status": "int?",
    "latency_ms": "float?",
}
FIELD_KINDS: Final[tuple[tuple[str, _Kind], ...]] = tuple((name, _KINDS.get(name, "str?")) for name in RECORD_FIELDS)
# The canonical object's members in RFC 8785 §3.2.3 order (all keys are ASCII, so code-unit order
# is plain string order), precomputed once because records are hashed on the hot path.
_CANONICAL_ORDER: Final[tuple[tuple[str, _Kind, str], ...]] = tuple(
    sorted((name, kind, encode_basestring(name) + ":") for name, kind in (*FIELD_KINDS, ("prev_hash", "str")))
)
_PHASES: Final = frozenset(("intent", "outcome", "event"))
_DECISIONS: Final = frozenset(("allow", "deny", "step_up"))


def new_event_id(now: float | None = None) -> str:
    """A time-ordered unique id in UUIDv7 layout (RFC 9562 §5.7): 48-bit ms timestamp, 74 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & 0xFFFF_FFFF_FFFF
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_timestamp(timestamp: float) -> str:
    """Epoch seconds as UTC ISO 8601 with milliseconds, e.g. 2026-11-28T12:00:00.123Z."""
    seconds, millis = divmod(math.floor(timestamp * 1000), 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _jcs_numbers(value: object) -> object:
    # JSON text like 12345678901234567890 parses to an exact Python int, but RFC 8785 works on doubles:
    # canonicalizing the JSON text means canonicalizing float(n), so do exactly that.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
        return float(value)
    if isinstance(value, Mapping):
        return {k: _jcs_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jcs_numbers(v) for v in value]
    return value


def arguments_digest(arguments: object) -> str:
    """Lowercase hex SHA-256 of the RFC 8785 canonical JSON of the tool-call arguments.

    Raises ValueError for input no JSON text can canonicalize to (NaN, Infinity, lone surrogates:
    outside I-JSON, RFC 7493), which the wire parser should already have refused.
    """
    try:
        canonical = rfc8785.dumps(arguments)  # type: ignore[arg-type]
    except rfc8785.IntegerDomainError:
        canonical = rfc8785.dumps(_jcs_numbers(arguments))  # type: ignore[arg-type]
    return hashlib.sha256(canonical).hexdigest()


def _normalize_key(key: str) -> str:
    return key.casefold().replace("-", "").replace("_", "")


def redact(arguments: object, keys: Iterable[str]) -> object:
    """A copy of `arguments` where the value of every object member whose name contains one of `keys`
    (case-insensitive, ignoring `-` and `_`, so "api_key" also covers "X-Api-Key" and "apiKey") is
    "[REDACTED]". Matching by containment over-redacts ("tokens_used") rather than leak "access_token".
    """
    needles = tuple(n for n in (_normalize_key(k) for k in keys) if n)
    return _redact(arguments, needles, 0)


def _redact(value: object, needles: tuple[str, ...], depth: int) -> object:
    if isinstance(value, Mapping | list | tuple) and depth >= _MAX_REDACT_DEPTH:
        return TRUNCATED
    if isinstance(value, Mapping):
        out: dict[object, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and any(n in _normalize_key(key) for n in needles):
                out[key] = REDACTED
            else:
                out[key] = _redact(item, needles, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_redact(item, needles, depth + 1) for item in value]
    return value


def arguments_json(arguments: object, keys: Iterable[str]) -> str:
    """The redacted arguments as compact JSON text, for `AuditRecord.arguments`."""
    return json.dumps(redact(arguments, keys), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _encode_value(name: str, kind: str, value: Any) -> str:
    # Type checks live here so that what is hashed is exactly what SQLite stores and gives back.
    if value is None:
        if kind in ("str?", "int?", "float?"):
            return "null"
        raise TypeError(f"audit record field {name} must not be None")
    value_type = type(value)
    if kind in ("str", "str?"):
        if value_type is str:
            return encode_basestring(value)
    elif kind == "int?":
        if value_type is int:
            if -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
                return str(value)
            raise ValueError(f"audit record field {name} is outside the JSON integer range")
    elif kind in ("float", "float?"):
        if value_type is float or value_type is int:
            return _encode_number(name, float(value))
    elif kind == "list" and isinstance(value, tuple | list) and all(type(v) is str for v in value):
        return "[" + ",".join(encode_basestring(v) for v in value) + "]"
    raise TypeError(f"audit record field {name} has type {value_type.__name__}, expected {kind}")


def _encode_number(name: str, value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"audit record field {name} must be finite")
    # Python's repr and ECMAScript's Number-to-String (RFC 8785 §3.2.2.3) both print the shortest
    # round-tripping digits and agree on plain decimal notation in this range; elsewhere (exponents,
    # integral values) defer to rfc8785.
    if 1e-4 <= abs(value) < 1e15 and not value.is_integer():
        return repr(value)
    return rfc8785.dumps(value).decode("ascii")


def canonical_record_bytes(record: AuditRecord, prev_hash: str) -> bytes:
    """RFC 8785 canonical JSON of every record field (tuples as arrays, None as null) plus "prev_hash".

    Equal to `rfc8785.dumps({**fields, "prev_hash": prev_hash})`, built directly because the generic
    encoder costs ~30 µs per record on the hot path. Raises TypeError/ValueError for a field of the
    wrong type or outside the JSON domain, and UnicodeEncodeError for a lone surrogate (see `storable`).
    """
    return canonical_record_text(record, prev_hash).encode("utf-8")


def canonical_record_text(record: AuditRecord, prev_hash: str) -> str:
    """`canonical_record_bytes` before UTF-8 encoding (which raises for a lone surrogate)."""
    text = _canonical_text_fast(record, prev_hash)
    if text is None:
        text = _canonical_text(record, prev_hash)
    return text


def _canonical_text(record: AuditRecord, prev_hash: str) -> str:
    # The general path: every field checked and encoded one by one. It decides every case the fast
    # path leaves to it, including every error.
    if record.phase not in _PHASES:
        raise ValueError(f"audit record phase must be one of {sorted(_PHASES)}")
    if record.decision is not None and record.decision not in _DECISIONS:
        raise ValueError(f"audit record decision must be one of {sorted(_DECISIONS)}")
    parts = [
        prefix + _encode_value(name, kind, prev_hash if name == "prev_hash" else getattr(record, name))
        for name, kind, prefix in _CANONICAL_ORDER
    ]
    return "{" + ",".join(parts) + "}"


# The fast path. Records of one shape (which fields are None, which hold str, int, float or a tuple) share
# a plan: the canonical object as a %-template with the names, separators and nulls filled in, so that
# encoding a record is one attrgetter, one map of encode_basestring over its strings, a few numbers, and
# one % (about 4 µs instead of 8). Anything unusual (a wrong type, a number outside the range where
# Python's repr is ECMAScript's, a list holding a non-string) gets no plan or fails a check, and goes
# to `_canonical_text`, which encodes it or raises. tests/audit/test_record.py checks both paths
# against rfc8785.
_SORTED_FIELDS: Final = tuple(name for name, _, _ in _CANONICAL_ORDER if name != "prev_hash")
_SORTED_VALUES: Final = operator.attrgetter(*_SORTED_FIELDS)
_PHASE_AT: Final = _SORTED_FIELDS.index("phase")
_DECISION_AT: Final = _SORTED_FIELDS.index("decision")
_PREV_HASH: Final = -1  # where a plan takes prev_hash from, instead of an index into the record's values
_MAX_PLANS: Final = 512
_NONE_TYPE: Final = type(None)
_STR_TYPES: Final = frozenset((str,))


@dataclass(frozen=True, slots=True)
class _Plan:
    template: str  # "%s" for each value that is not null, in canonical order
    strings: Callable[[tuple[Any, ...]], tuple[str, ...]]  # the str values, in canonical order
    others: tuple[tuple[int, int, str], ...]  # (argument slot, index into the values or _PREV_HASH, kind)


_PLANS: dict[tuple[type, ...], _Plan | None] = {}


def _plan_for(types: tuple[type, ...]) -> _Plan | None:
    kinds = dict(FIELD_KINDS)
    template: list[str] = []
    strings: list[int] = []
    others: list[tuple[int, int, str]] = []
    for name, _, prefix in _CANONICAL_ORDER:
        at = _PREV_HASH if name == "prev_hash" else _SORTED_FIELDS.index(name)
        kind = "prev" if at == _PREV_HASH else kinds[name]
        value_type = str if at == _PREV_HASH else types[at]
        if value_type is _NONE_TYPE and kind in ("str?", "int?", "float?"):
            template.append(prefix + "null")
            continue
        slot = len(strings) + len(others)
        if kind in ("str", "str?") and value_type is str:
            strings.append(at)
        elif (
            kind == "prev"
            or (kind == "int?" and value_type is int)
            or (kind in ("float", "float?") and value_type in (float, int))
            or (kind == "list" and value_type in (tuple, list))
        ):
            others.append((slot, at, "float" if kind == "float?" else kind.rstrip("?")))
        else:
            return None  # a type the general path has to refuse
        template.append(prefix + "%s")
    if len(strings) < 2:  # itemgetter of one index returns a bare value; never so for a valid record
        return None
    return _Plan("{" + ",".join(template) + "}", operator.itemgetter(*strings), tuple(others))


def string_array_json(items: tuple[str, ...] | list[str]) -> str | None:
    """`items` as a JSON array of strings, as RFC 8785 and `json.dumps(ensure_ascii=False)` both write it;
    None if an item is not a str. Records of one principal repeat the same scope tuples, so they are memoized."""
    if not set(map(type, items)) <= _STR_TYPES:
        return None
    if type(items) is not tuple:
        return "[" + ",".join(map(encode_basestring, items)) + "]"
    text = _ARRAY_TEXT.get(items)
    if text is None:
        text = "[" + ",".join(map(encode_basestring, items)) + "]"
        if len(_ARRAY_TEXT) < _MAX_PLANS:
            _ARRAY_TEXT[items] = text
    return text


_ARRAY_TEXT: dict[tuple[str, ...], str] = {}


def _canonical_text_fast(record: AuditRecord, prev_hash: str) -> str | None:
    values = _SORTED_VALUES(record)
    types = tuple(map(type, values))
    try:
        plan = _PLANS[types]
    except KeyError:
        plan = _plan_for(types)
        if len(_PLANS) < _MAX_PLANS:
            _PLANS[types] = plan
    if plan is None or type(prev_hash) is not str or values[_PHASE_AT] not in _PHASES:
        return None
    decision = values[_DECISION_AT]
    if decision is not None and decision not in _DECISIONS:
        return None
    args = list(map(encode_basestring, plan.strings(values)))
    for slot, at, kind in plan.others:
        if kind == "prev":
            args.insert(slot, encode_basestring(prev_hash))
            continue
        value = values[at]
        if kind == "list":
            text = string_array_json(value)
            if text is None:
                return None
            args.insert(slot, text)
        elif type(value) is int:  # an int?, or an int in a float field: its digits either way
            if not -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
                return None
            args.insert(slot, str(value))
        elif value.is_integer():  # False for NaN and infinities
            if not -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
                return None
            args.insert(slot, str(int(value)))  # ECMAScript prints 2.0 as 2 (and -0.0 as 0)
        elif 1e-4 <= abs(value) < 1e15:  # False for NaN
            args.insert(slot, repr(value))  # see _encode_number
        else:
            return None
    return plan.template % tuple(args)


def chain_hash(prev_hash: str, record: AuditRecord) -> str:
    """SHA-256 (hex) linking `record` to its predecessor; the first record's predecessor is 64 zeros."""
    return hashlib.sha256(canonical_record_bytes(record, prev_hash)).hexdigest()


def _escape_surrogates(value: str) -> str:
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def storable(record: AuditRecord) -> AuditRecord:
    """`record` with lone surrogates (which UTF-8 cannot carry) spelled as `\\udXXX` text.

    Client-controlled strings (tool names, request contexts) may carry them; an audit record must
    still be written, and what is written must be what is hashed.
    """
    changes: dict[str, Any] = {}
    for name, kind in FIELD_KINDS:
        value = getattr(record, name)
        if kind in ("str", "str?") and isinstance(value, str):
            fixed = _escape_surrogates(value)
            if fixed != value:
                changes[name] = fixed
        elif kind == "list" and isinstance(value, tuple | list):
            fixed_list = tuple(_escape_surrogates(v) if isinstance(v, str) else v for v in value)
            if fixed_list != tuple(value):
                changes[name] = fixed_list
    return dataclasses.replace(record, **changes) if changes else record


def outcome_of(
    intent: AuditRecord,
    *,
    outcome: str,
    timestamp: float,
    http_status: int | None = None,
    latency_ms: float | None = None,
    detail: str | None = None,
) -> AuditRecord:
    """The outcome record for a call whose intent was `intent`: its event id, which server, method and tool,
    and what happened; nothing else. Who made the call and what it asked for are in the intent the outcome
    names by event id; queries join the two (`audit.query`). Small outcomes make a call cheaper to record."""
    return AuditRecord(
        phase="outcome",
        timestamp=timestamp,
        event_id=intent.event_id,
        mcp_server=intent.mcp_server,
        method=intent.method,
        tool=intent.tool,
        outcome=outcome,
        http_status=http_status,
        latency_ms=latency_ms,
        detail=detail,
    )
