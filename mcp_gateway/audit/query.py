"""Reading the audit database: one row per call, chain verification, and export for a SIEM."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from mcp_gateway.audit.record import GENESIS_HASH, AuditRecord, canonical_record_bytes, format_timestamp
from mcp_gateway.audit.schema import (
    SELECT_ROWS_SQL,
    TABLE,
    parse_record,
    read_head,
    schema_version,
    uri_for,
)

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


def open_read_only(db_path: str | Path) -> sqlite3.Connection:
    """Open an existing audit database without ever creating or writing it."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no audit database at {path}")
    conn = sqlite3.connect(uri_for(path, read_only=True), uri=True, isolation_level=None, timeout=5.0)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        if schema_version(conn) is None:
            conn.close()
            raise FileNotFoundError(f"{path} has no audit records table (not an mcp-gateway audit database)")
    except BaseException:
        conn.close()
        raise
    return conn


_FILTER_COLUMNS: Final = (
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


def _merged_sql() -> str:
    # One row per call: the intent's record and the first outcome's; an intent whose outcome never arrived
    # (crash, kill, in flight) is "aborted". Outcomes without an intent and events stand alone. The filter
    # columns are read out of the JSON here; the output is parsed from the records themselves in Python,
    # because SQLite's JSON functions cut text short at an escaped NUL, and client-chosen text may hold one.
    def merged(name: str) -> str:
        if name == "outcome":
            return f"CASE WHEN o.seq IS NULL THEN '{ABORTED}' ELSE json_extract(o.record, '$.outcome') END"
        return f"COALESCE(json_extract(o.record, '$.{name}'), json_extract(i.record, '$.{name}'))"

    def alone(name: str) -> str:
        return f"json_extract(record, '$.{name}')"

    filters = [column for _, column in _FILTER_COLUMNS]
    return f"""
        SELECT i.seq AS seq, i.timestamp AS timestamp, i.record AS first, o.record AS second,
               {", ".join(f"{merged(c)} AS {c}" for c in filters)}
        FROM {TABLE} AS i
        LEFT JOIN {TABLE} AS o ON o.seq = (
            SELECT min(seq) FROM {TABLE} WHERE event_id = i.event_id AND phase = 'outcome')
        WHERE i.phase = 'intent'
        UNION ALL
        SELECT seq, timestamp, record, NULL, {", ".join(f"{alone(c)} AS {c}" for c in filters)} FROM {TABLE} AS o
        WHERE o.phase = 'outcome'
          AND NOT EXISTS (SELECT 1 FROM {TABLE} WHERE event_id = o.event_id AND phase = 'intent')
        UNION ALL
        SELECT seq, timestamp, record, NULL, {", ".join(f"{alone(c)} AS {c}" for c in filters)} FROM {TABLE}
        WHERE phase = 'event'
    """


def query(db_path: str | Path, filters: QueryFilters | None = None) -> Iterator[dict[str, Any]]:
    """Yield one dict per call (intent and outcome merged) or event, oldest first, keys in OUTPUT_FIELDS order."""
    filters = filters or QueryFilters()
    where: list[str] = []
    params: list[Any] = []
    for attribute, column in _FILTER_COLUMNS:
        value = getattr(filters, attribute)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.since is not None:
        where.append("timestamp >= ?")
        params.append(filters.since)
    if filters.until is not None:
        where.append("timestamp < ?")
        params.append(filters.until)
    sql = f"SELECT first, second FROM ({_merged_sql()})" + (" WHERE " + " AND ".join(where) if where else "")
    conn = open_read_only(db_path)
    try:
        if filters.limit is not None:
            # The most recent N, still printed oldest first so the output reads like a log.
            sql += " ORDER BY timestamp DESC, seq DESC LIMIT ?"
            rows = conn.execute(sql, [*params, max(0, filters.limit)]).fetchall()
            rows.reverse()
            yield from (_output(*row) for row in rows)
        else:
            sql += " ORDER BY timestamp, seq"
            yield from (_output(*row) for row in conn.execute(sql, params))
    finally:
        conn.close()


def _readable(text: str) -> AuditRecord:
    try:
        return parse_record(text)[0]
    except ValueError as exc:
        raise ValueError(f"an audit record cannot be read ({exc}); run `mcp-gateway audit verify`") from None


def _output(first: str, second: str | None) -> dict[str, Any]:
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


def verify(db_path: str | Path) -> VerifyResult:
    """Walk the whole chain in seq order and report the first broken link, then compare the tail with
    the head checkpoint. A rewrite of every row *and* the checkpoint is only caught by comparing
    `head_hash` with a copy kept elsewhere."""
    conn = open_read_only(db_path)
    try:
        conn.execute("BEGIN")  # one snapshot, even while the gateway keeps appending
        prev_seq, prev_hash, count = 0, GENESIS_HASH, 0
        for row in conn.execute(SELECT_ROWS_SQL + " ORDER BY seq"):
            problem = _check_row(row, prev_seq, prev_hash)
            if problem is not None:
                return VerifyResult(False, count, prev_seq, prev_hash, row[0], problem)
            prev_seq, prev_hash, count = row[0], row[-1], count + 1
        head = read_head(conn)
        if head is None:
            return VerifyResult(False, count, prev_seq, prev_hash, prev_seq + 1, "the head checkpoint is missing")
        if head != (prev_seq, prev_hash):
            if head[0] > prev_seq:
                reason = (
                    f"the log ends at seq {prev_seq} but the head checkpoint records seq {head[0]} "
                    f"(hash {head[1]}): records were removed from the end"
                )
            else:
                reason = f"the head checkpoint (seq {head[0]}, hash {head[1]}) does not match the last record"
            return VerifyResult(False, count, prev_seq, prev_hash, prev_seq + 1, reason)
        return VerifyResult(True, count, prev_seq, prev_hash)
    finally:
        conn.close()


def _check_row(row: tuple[Any, ...], prev_seq: int, prev_hash: str) -> str | None:
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


def export(
    db_path: str | Path,
    out: TextIO,
    *,
    after_seq: int | None = None,
    after_event_id: str | None = None,
) -> ExportResult:
    """Write every record after a cursor as one JSON object per line (raw intent/outcome/event records,
    with seq, prev_hash and hash). Resume with `after_seq=result.last_seq`. `after_event_id` resumes after
    that call's *first* record, so a call's later outcome is never skipped: delivery is at least once,
    and `seq` is the key to deduplicate on."""
    conn = open_read_only(db_path)
    try:
        start = after_seq or 0
        if after_event_id is not None:
            row = conn.execute(f"SELECT min(seq) FROM {TABLE} WHERE event_id = ?", (after_event_id,)).fetchone()
            if row is None or row[0] is None:
                raise LookupError(f"no audit record has event_id {after_event_id!r}")
            start = max(start, int(row[0]))
        count, last = 0, None
        for seq, _, _, _, text, hash_ in conn.execute(SELECT_ROWS_SQL + " WHERE seq > ? ORDER BY seq", (start,)):
            try:
                record, prev_hash = parse_record(text)
            except ValueError as exc:
                raise ValueError(
                    f"the audit record at seq {seq} cannot be read ({exc}); run `mcp-gateway audit verify`"
                ) from None
            out.write(json.dumps(_export_line(seq, record, prev_hash, hash_), ensure_ascii=True, separators=(",", ":")))
            out.write("\n")
            count, last = count + 1, int(seq)
        return ExportResult(count, last)
    finally:
        conn.close()


def _export_line(seq: int, record: AuditRecord, prev_hash: str, hash_: str) -> dict[str, Any]:
    line: dict[str, Any] = {"seq": seq, "phase": record.phase}
    line.update({name: getattr(record, name) for name in OUTPUT_FIELDS})
    line["timestamp"] = format_timestamp(record.timestamp)
    line["timestamp_epoch"] = record.timestamp  # exact, so the chain can be recomputed downstream
    for name in _ARRAY_FIELDS:
        line[name] = list(line[name])
    line["prev_hash"], line["hash"] = prev_hash, hash_
    return line
