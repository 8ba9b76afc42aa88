"""Reading a PostgreSQL audit log: calls merged across chains in time order, every chain verified, export."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any, Final, TextIO

from mcp_gateway.audit.postgres.schema import CHAINS, RECORDS
from mcp_gateway.audit.postgres.session import Snapshot, reading
from mcp_gateway.audit.query import (
    FILTER_FIELDS,
    ChainVerdict,
    ExportResult,
    QueryFilters,
    VerifyResult,
    call_row,
    export_line,
    verify_chain,
    verify_chains,
)

# One row per call: the intent's record and its first outcome's (None: the call shows as aborted); outcomes
# without an intent and events stand alone. The time window is the intent's. The exact-match filters are
# applied to the parsed rows in Python, as SQLite's reader does on its merged columns: PostgreSQL's JSON
# functions refuse text holding an escaped NUL, and client-chosen text may hold one.
_WINDOW: Final = "($1::float8 IS NULL OR {t}.timestamp >= $1) AND ($2::float8 IS NULL OR {t}.timestamp < $2)"
_MERGED_SQL: Final = f"""
    SELECT i.record, o.record, i.timestamp, i.chain_id, i.seq FROM {RECORDS} AS i
    LEFT JOIN LATERAL (
        SELECT x.record FROM {RECORDS} AS x WHERE x.event_id = i.event_id AND x.phase = 'outcome'
        ORDER BY x.tx, x.chain_id, x.seq LIMIT 1
    ) AS o ON true
    WHERE i.phase = 'intent' AND {_WINDOW.format(t="i")}
    UNION ALL
    SELECT r.record, NULL, r.timestamp, r.chain_id, r.seq FROM {RECORDS} AS r
    WHERE r.phase = 'outcome' AND {_WINDOW.format(t="r")}
      AND NOT EXISTS (SELECT 1 FROM {RECORDS} AS x WHERE x.event_id = r.event_id AND x.phase = 'intent')
    UNION ALL
    SELECT r.record, NULL, r.timestamp, r.chain_id, r.seq FROM {RECORDS} AS r
    WHERE r.phase = 'event' AND {_WINDOW.format(t="r")}
"""
_ROW_COLUMNS: Final = "seq, event_id, phase, timestamp, record, hash"
# Export walks rows in the order their transactions started, and only rows of transactions older than the
# oldest one still running: those are all committed and visible, so a cursor (a transaction id) never skips
# a row that commits late. A chain's rows come in seq order, so the chain can be recomputed downstream.
_HORIZON_SQL: Final = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_EXPORT_SQL: Final = f"""
    SELECT tx, chain_id, {_ROW_COLUMNS} FROM {RECORDS}
    WHERE tx < $1 AND (tx > $2 OR (tx = $2 AND $3::text IS NOT NULL AND (chain_id, seq) > ($3, $4)))
    ORDER BY tx, chain_id, seq
"""
_FIRST_OF_EVENT_SQL: Final = (
    f"SELECT tx, chain_id, seq FROM {RECORDS} WHERE event_id = $1 ORDER BY tx, chain_id, seq LIMIT 1"
)


def _same(head: tuple[int, str] | None) -> tuple[int, str] | None:
    return head


def _matches(row: dict[str, Any], filters: QueryFilters) -> bool:
    return all(getattr(filters, attribute) in (None, row[field]) for attribute, field in FILTER_FIELDS)


class PostgresAuditReader:
    """An `AuditReader` over the log at a `postgresql://` URL; every call reads one snapshot and lets it go."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, filters: QueryFilters | None = None) -> Iterator[dict[str, Any]]:
        """Rows carry `chain_id` after the contract's fields: the writer whose chain holds the call."""
        filters = filters or QueryFilters()
        with reading(self.url) as snapshot:
            if filters.limit is not None:
                # The most recent N, still printed oldest first so the output reads like a log.
                newest = self._rows(snapshot, filters, "DESC")
                yield from reversed(list(itertools.islice(newest, max(0, filters.limit))))
            else:
                yield from self._rows(snapshot, filters, "ASC")

    def _rows(self, snapshot: Snapshot, filters: QueryFilters, order: str) -> Iterator[dict[str, Any]]:
        sql = f"SELECT * FROM ({_MERGED_SQL}) AS calls ORDER BY 3 {order}, 4 {order}, 5 {order}"
        for first, second, _, chain_id, _ in snapshot.rows(sql, filters.since, filters.until):
            row = call_row(first, second)
            if _matches(row, filters):
                row["chain_id"] = chain_id
                yield row

    def verify(self) -> VerifyResult:
        """Each chain is walked link by link against its own head checkpoint; a chain registered with
        records but holding none, and rows whose chain is not registered, are broken chains too."""
        with reading(self.url) as snapshot:
            heads = {
                str(chain_id): (int(seq), str(hash_))
                for chain_id, seq, hash_ in snapshot.run(
                    lambda c: c.fetch(f"SELECT chain_id, head_seq, head_hash FROM {CHAINS}")
                )
            }
            rows = snapshot.rows(f"SELECT chain_id, {_ROW_COLUMNS} FROM {RECORDS} ORDER BY chain_id, seq")
            verdicts: dict[str, VerifyResult] = {}
            for chain_id, chain_rows in itertools.groupby(rows, key=lambda row: str(row[0])):
                head = heads.get(chain_id)
                result = verify_chain((row[1:] for row in chain_rows), functools.partial(_same, head))
                if head is None and result.records and result.reason == "the head checkpoint is missing":
                    reason = "its rows have no entry in audit_chains: the chain's head checkpoint was removed"
                    result = VerifyResult(
                        False, result.records, result.head_seq, result.head_hash, result.broken_seq, reason
                    )
                verdicts[chain_id] = result
            for chain_id, head in heads.items():
                if chain_id not in verdicts:
                    verdicts[chain_id] = verify_chain((), functools.partial(_same, head))
                    if not verdicts[chain_id].ok:
                        reason = (
                            f"the chain is registered with {head[0]} records but none is left: its rows were removed"
                        )
                        verdicts[chain_id] = VerifyResult(False, 0, 0, verdicts[chain_id].head_hash, 1, reason)
        return verify_chains(ChainVerdict(chain_id, verdicts[chain_id]) for chain_id in sorted(verdicts))

    def export(self, out: TextIO, *, after_seq: int | None = None, after_event_id: str | None = None) -> ExportResult:
        """Lines carry `chain_id`, and `seq` counts within that chain: (chain_id, seq) is the key to deduplicate
        on. The cursor `last_seq` is a transaction position, not a seq: resume with `after_seq=result.last_seq`.
        `after_event_id` resumes after that call's first record."""
        with reading(self.url) as snapshot:
            start: tuple[int, str | None, int] = (after_seq or 0, None, 0)
            if after_event_id is not None:
                row = snapshot.run(lambda c: c.fetchrow(_FIRST_OF_EVENT_SQL, after_event_id))
                if row is None:
                    raise LookupError(f"no audit record has event_id {after_event_id!r}")
                position = (int(row[0]), str(row[1]), int(row[2]))
                start = max(start, position, key=lambda p: (p[0], p[1] is None, p[1] or "", p[2]))
            horizon = int(snapshot.run(lambda c: c.fetchval(_HORIZON_SQL)))
            count, last = 0, None
            for tx, chain_id, seq, _, _, _, text, hash_ in snapshot.rows(_EXPORT_SQL, horizon, *start):
                out.write(export_line(int(seq), text, hash_, chain_id=str(chain_id)))
                out.write("\n")
                count, last = count + 1, int(tx)
            return ExportResult(count, last)
