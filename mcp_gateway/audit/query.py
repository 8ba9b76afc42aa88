"""What the auditor reads from any store: filters, one row per call, export lines, chain verification."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from mcp_gateway.audit.chain import head_problem, link_problem, parse_record
from mcp_gateway.audit.record import GENESIS_HASH, AuditRecord, format_timestamp

# The user-facing contract (DESIGN.md): these names, in this order, come first in every query row.
CONTRACT_FIELDS: Final = (
    "timestamp",
    "event_id",
    "agent_id",
    "delegating_user",
    "session_id",
    "mcp_server",
    "method",
    "tool",
    "scope_granted",
    "scopes_required",
    "token_ttl",
    "token_id",
    "request_context",
    "decision",
    "policy_rule",
    "outcome",
    "http_status",
    "latency_ms",
    "arguments_sha256",
)
EXTRA_FIELDS: Final = (
    "policy_version",
    "client_address",
    "upstream_identity",
    "event_type",
    "detail",
    "arguments",
    "upstream_credential",
    "shadow_decision",
    "approval",
)
OUTPUT_FIELDS: Final = CONTRACT_FIELDS + EXTRA_FIELDS
ABORTED: Final = "aborted"
_ARRAY_FIELDS: Final = frozenset(("scope_granted", "scopes_required"))


@dataclass(frozen=True)
class QueryFilters:
    """Exact-match filters (None = any) and a time range in epoch seconds, `since` inclusive."""

    agent: str | None = None
    user: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | None = None
    outcome: str | None = None
    session: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None  # the most recent N rows; rows are always yielded oldest first


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int  # rows whose links were checked before the walk stopped
    head_seq: int  # the last row's seq (0 for an empty log)
    head_hash: str  # its hash: anchor it elsewhere to catch a wholesale rewrite
    broken_seq: int | None = None
    reason: str | None = None
    # A log of several chains (one per writer) gives each chain's own result here, in chain id order; the
    # fields above then sum them up (see `verify_chains`). None for a log of one chain.
    chains: tuple[ChainVerdict, ...] | None = None


@dataclass(frozen=True)
class ChainVerdict:
    """One writer's chain in a shared log, and what walking it found."""

    chain_id: str
    result: VerifyResult


@dataclass(frozen=True)
class ExportResult:
    count: int
    last_seq: int | None  # resume with after_seq=last_seq


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_time(value: str, now: float) -> float:
    """`30m`, `1h`, `2d`, `1w` (before `now`), or an ISO 8601 date or time (UTC unless it says otherwise)."""
    text = value.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ValueError(f"expected a duration like 30m, 1h, 2d or an ISO 8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# QueryFilters attribute → the record field it matches exactly.
FILTER_FIELDS: Final = (
    ("agent", "agent_id"),
    ("user", "delegating_user"),
    ("server", "mcp_server"),
    ("tool", "tool"),
    ("decision", "decision"),
    ("outcome", "outcome"),
    ("session", "session_id"),
)
# From the intent only: when the call happened, its id, what it asked for.
_INTENT_ONLY: Final = frozenset(("timestamp", "event_id", "arguments", "scope_granted", "scopes_required"))


def _readable(text: str) -> AuditRecord:
    try:
        return parse_record(text)[0]
    except ValueError as exc:
        raise ValueError(f"an audit record cannot be read ({exc}); run `mcp-gateway audit verify`") from None


def call_row(first: str, second: str | None) -> dict[str, Any]:
    """A query row from a call's first stored record and, for an intent, its first outcome's (None if none
    arrived: the call shows as aborted); events and lone outcomes stand alone."""
    record = _readable(first)
    out = {name: getattr(record, name) for name in OUTPUT_FIELDS}
    if record.phase == "intent":
        outcome = _readable(second) if second is not None else None
        for name in OUTPUT_FIELDS:
            if name in _INTENT_ONLY:
                continue
            if name == "outcome":
                out[name] = outcome.outcome if outcome is not None else ABORTED
            elif outcome is not None and getattr(outcome, name) is not None:
                out[name] = getattr(outcome, name)
    out["timestamp"] = format_timestamp(record.timestamp)
    for name in _ARRAY_FIELDS:
        out[name] = list(out[name])
    return out


def verify_chain(rows: Iterable[tuple[Any, ...]], read_head: Callable[[], tuple[int, str] | None]) -> VerifyResult:
    """Check stored rows (seq, event_id, phase, timestamp, record text, hash), in seq order, link by link, then
    the head checkpoint `read_head()` gives once the rows are exhausted. The first broken link wins."""
    prev_seq, prev_hash, count = 0, GENESIS_HASH, 0
    for row in rows:
        problem = link_problem(row, prev_seq, prev_hash)
        if problem is not None:
            return VerifyResult(False, count, prev_seq, prev_hash, row[0], problem)
        prev_seq, prev_hash, count = row[0], row[-1], count + 1
    problem = head_problem(read_head(), prev_seq, prev_hash)
    if problem is not None:
        return VerifyResult(False, count, prev_seq, prev_hash, prev_seq + 1, problem)
    return VerifyResult(True, count, prev_seq, prev_hash)


def verify_chains(verdicts: Iterable[ChainVerdict]) -> VerifyResult:
    """The result for a log of several chains: ok if every chain is; `records` counts every row checked;
    `head_seq` and `head_hash` are the number of chains and one SHA-256 over every chain's head (anchor it
    elsewhere, as for one chain); the first broken chain gives `broken_seq` and `reason`."""
    chains = tuple(verdicts)
    heads = "".join(f"{v.chain_id}:{v.result.head_seq}:{v.result.head_hash}\n" for v in chains)
    broken = [v for v in chains if not v.result.ok]
    first = broken[0] if broken else None
    return VerifyResult(
        ok=first is None,
        records=sum(v.result.records for v in chains),
        head_seq=len(chains),
        head_hash=hashlib.sha256(heads.encode()).hexdigest(),
        broken_seq=None if first is None else first.result.broken_seq,
        reason=None if first is None else f"chain {first.chain_id}: {first.result.reason}",
        chains=chains,
    )


def export_line(seq: int, text: str, hash_: str, *, chain_id: str | None = None) -> str:
    """One stored row as an export line (no newline): the raw record with seq, prev_hash and hash, and the
    chain it belongs to in a log of several chains (`seq` then counts within that chain)."""
    try:
        record, prev_hash = parse_record(text)
    except ValueError as exc:
        where = f"seq {seq}" if chain_id is None else f"chain {chain_id} seq {seq}"
        raise ValueError(
            f"the audit record at {where} cannot be read ({exc}); run `mcp-gateway audit verify`"
        ) from None
    line = _export_line(seq, record, prev_hash, hash_, chain_id)
    return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


def _export_line(seq: int, record: AuditRecord, prev_hash: str, hash_: str, chain_id: str | None) -> dict[str, Any]:
    line: dict[str, Any] = {"seq": seq} if chain_id is None else {"seq": seq, "chain_id": chain_id}
    line["phase"] = record.phase
    line.update({name: getattr(record, name) for name in OUTPUT_FIELDS})
    line["timestamp"] = format_timestamp(record.timestamp)
    line["timestamp_epoch"] = record.timestamp  # exact, so the chain can be recomputed downstream
    for name in _ARRAY_FIELDS:
        line[name] = list(line[name])
    line["prev_hash"], line["hash"] = prev_hash, hash_
    return line
