"""The hash chain over stored records, for any store: sealing a record, reading it back, checking links."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from mcp_gateway.audit.canonical import canonical_record_bytes, canonical_record_text
from mcp_gateway.audit.record import FIELD_KINDS, GENESIS_HASH, LATE_FIELDS, RECORD_FIELDS, AuditRecord, storable

_LIST_FIELDS: Final = frozenset(name for name, kind in FIELD_KINDS if kind == "list")
_FLOAT_FIELDS: Final = frozenset(name for name, kind in FIELD_KINDS if kind in ("float", "float?"))
_FIELD_NAMES: Final = frozenset(RECORD_FIELDS)


def seal(record: AuditRecord, prev_hash: str) -> tuple[str, str]:
    """`record`'s canonical JSON as it will be stored (lone surrogates spelled out: see `storable`), and its
    chain hash after `prev_hash`."""
    text = canonical_record_text(record, prev_hash)
    try:
        canonical = text.encode("utf-8")
    except UnicodeEncodeError:
        text = canonical_record_text(storable(record), prev_hash)
        canonical = text.encode("utf-8")
    return text, hashlib.sha256(canonical).hexdigest()


def parse_record(text: str) -> tuple[AuditRecord, str]:
    """A stored record's canonical JSON back as (record, prev_hash). Raises ValueError if it is not one: not
    JSON, not an object, a member missing or unknown (TypeError from the record's types is left to the encoder)."""
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("the record is not a JSON object")
    prev_hash = fields.pop("prev_hash", None)
    if not isinstance(prev_hash, str):
        raise ValueError("the record has no prev_hash string")
    for name in LATE_FIELDS:
        fields.setdefault(name, None)  # left out while null (records written before the field existed)
    if fields.keys() != _FIELD_NAMES:
        missing, unknown = sorted(_FIELD_NAMES - fields.keys()), sorted(fields.keys() - _FIELD_NAMES)
        raise ValueError(f"the record's members are wrong (missing {missing}, unknown {unknown})")
    for name in _LIST_FIELDS:
        if isinstance(fields[name], list):
            fields[name] = tuple(fields[name])
    for name in _FLOAT_FIELDS:
        # RFC 8785 §3.2.2.3 writes an integral number without a fraction (2.0 as 2), so a latency of exactly
        # 2 ms comes back from JSON as int 2: give it back as the float it was.
        if type(fields[name]) is int:
            fields[name] = float(fields[name])
    return AuditRecord(**fields), prev_hash


def chain_position(
    head: tuple[int, str] | None, tail: tuple[int, str] | None
) -> tuple[tuple[int, str], dict[str, Any] | None]:
    """Where the next record chains on, given the head checkpoint and the last stored (seq, hash) (None
    for an empty log). Second, when the two disagree, the details for an audit event saying so."""
    tail = tail or (0, GENESIS_HASH)
    if head == tail:
        return tail, None
    # Rows were removed from the tail, or the checkpoint was edited. Continue after the higher of the
    # two so that a removed tail stays visible to `audit verify` as a seq gap.
    position = tail if head is None or tail[0] >= head[0] else head
    detail = {
        "head_seq": None if head is None else head[0],
        "head_hash": None if head is None else head[1],
        "tail_seq": tail[0],
        "tail_hash": tail[1],
    }
    return position, detail


def link_problem(row: tuple[Any, ...], prev_seq: int, prev_hash: str) -> str | None:
    """What is wrong with one stored row (seq, event_id, phase, timestamp, record text, hash) as the link
    after (prev_seq, prev_hash); None if nothing is."""
    seq, event_id, phase, timestamp, text, stored_hash = row
    if seq != prev_seq + 1:
        return f"seq {seq} follows seq {prev_seq}: {seq - prev_seq - 1} record(s) deleted"
    if not isinstance(text, str) or not isinstance(stored_hash, str):
        return "the record or its hash is not text: it was edited"
    canonical = text.encode("utf-8", "surrogatepass")
    if hashlib.sha256(canonical).hexdigest() != stored_hash:
        return "the stored hash does not match the record: the record was edited"
    try:
        record, stored_prev = parse_record(text)
        if canonical_record_bytes(record, stored_prev) != canonical:
            return "the record is not in canonical form: it was edited"
    except (TypeError, ValueError) as exc:
        return f"the record cannot be read back ({exc}): it was edited"
    if (event_id, phase, timestamp) != (record.event_id, record.phase, float(record.timestamp)):
        return "the row's event_id, phase or timestamp column disagrees with its record: the row was edited"
    if stored_prev != prev_hash:
        return "prev_hash does not match the hash of the record before it: records were deleted, inserted or reordered"
    return None


def head_problem(head: tuple[int, str] | None, last_seq: int, last_hash: str) -> str | None:
    """What is wrong with the head checkpoint given the last intact record; None if it matches."""
    if head is None:
        return "the head checkpoint is missing"
    if head == (last_seq, last_hash):
        return None
    if head[0] > last_seq:
        return (
            f"the log ends at seq {last_seq} but the head checkpoint records seq {head[0]} "
            f"(hash {head[1]}): records were removed from the end"
        )
    return f"the head checkpoint (seq {head[0]}, hash {head[1]}) does not match the last record"
