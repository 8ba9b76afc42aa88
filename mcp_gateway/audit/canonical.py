"""The canonical form of an audit record (RFC 8785) and the hash that chains it to its predecessor.

Records are hashed on the hot path, so besides the general encoder there is a fast path of precomputed
templates; both give exactly the bytes `rfc8785.dumps` gives for the record's canonical object.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Final

import rfc8785

from mcp_gateway.audit.record import FIELD_KINDS, AuditRecord, Kind

# RFC 8785 §3.2.2.3: numbers are IEEE 754 doubles, so integers are exact only within ±(2**53 - 1).
_JCS_INT_MAX: Final = 2**53 - 1
# The canonical object's members in RFC 8785 §3.2.3 order (all keys are ASCII, so code-unit order
# is plain string order), precomputed once because records are hashed on the hot path.
_CANONICAL_ORDER: Final[tuple[tuple[str, Kind, str], ...]] = tuple(
    sorted((name, kind, encode_basestring(name) + ":") for name, kind in (*FIELD_KINDS, ("prev_hash", "str")))
)
_PHASES: Final = frozenset(("intent", "outcome", "event"))
_DECISIONS: Final = frozenset(("allow", "deny", "step_up"))


def _encode_value(name: str, kind: str, value: Any) -> str:
    # Type checks live here so that what is hashed is exactly what SQLite stores and gives back.
    if value is None:
        if kind in ("str?", "str~", "int?", "float?"):
            return "null"
        raise TypeError(f"audit record field {name} must not be None")
    value_type = type(value)
    if kind in ("str", "str?", "str~"):
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
    """RFC 8785 canonical JSON of every record field (tuples as arrays, None as null, a null late field left
    out) plus "prev_hash".

    Equal to `rfc8785.dumps({**fields, "prev_hash": prev_hash})` less null `LATE_FIELDS`, built directly
    because the generic encoder costs ~30 µs per record on the hot path. Raises TypeError/ValueError for a field of the
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
    parts = []
    for name, kind, prefix in _CANONICAL_ORDER:
        value = prev_hash if name == "prev_hash" else getattr(record, name)
        if value is None and kind == "str~":
            continue  # a late field, null: not a member (see Kind)
        parts.append(prefix + _encode_value(name, kind, value))
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
        if value_type is _NONE_TYPE and kind == "str~":
            continue
        slot = len(strings) + len(others)
        if kind in ("str", "str?", "str~") and value_type is str:
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
