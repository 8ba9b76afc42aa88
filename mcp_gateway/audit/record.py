"""Audit records as values, and the pure functions that identify, digest, redact and chain them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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
    upstream_credential: str | None = None  # JSON {type, token_id, scope, expires_in}; never a secret
    shadow_decision: str | None = None  # "KIND:RULE" of a shadow policy (`[policy] shadow_cedar`) that disagreed
    approval: str | None = None  # JSON {id, approver, decision, reason} of a call held for a person's approval


RECORD_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(AuditRecord))

# How each field is typed on disk and in the canonical form: str, optional str, int, float, string list,
# and "str~": an optional str added after schema 2, left out of the canonical object while it is null, so
# that every record written before the field existed keeps its canonical form and its hash.
Kind = Literal["str", "str?", "str~", "int?", "float", "float?", "list"]
LATE_FIELDS: Final = ("upstream_credential", "shadow_decision", "approval")
_KINDS: Final[dict[str, Kind]] = {
    **dict.fromkeys(LATE_FIELDS, "str~"),
    "phase": "str",
    "timestamp": "float",
    "event_id": "str",
    "scope_granted": "list",
    "scopes_required": "list",
    "token_ttl": "int?",
    "http_status": "int?",
    "latency_ms": "float?",
}
FIELD_KINDS: Final[tuple[tuple[str, Kind], ...]] = tuple((name, _KINDS.get(name, "str?")) for name in RECORD_FIELDS)


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
        if kind in ("str", "str?", "str~") and isinstance(value, str):
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
