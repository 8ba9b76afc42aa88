"""The audit events a store writes about itself: a broken chain found at start-up, and recovery."""

from __future__ import annotations

import json
from typing import Any, Final

from mcp_gateway.audit.record import AuditRecord, format_timestamp, new_event_id

DISCONTINUITY_EVENT: Final = "audit_chain_discontinuity"
RECOVERED_EVENT: Final = "audit_store_recovered"


def discontinuity_event(detail: dict[str, Any], now: float) -> AuditRecord:
    """Said in the log itself (not only the gateway's own log): the last record and the head checkpoint
    disagree, as `chain.chain_position` describes in `detail`."""
    return _event(DISCONTINUITY_EVENT, detail, now)


def recovered_event(*, unavailable_since: float, failed_batches: int, records_lost: int, now: float) -> AuditRecord:
    """The store can write again: how long it could not, and what was lost meanwhile."""
    detail = {
        "unavailable_since": format_timestamp(unavailable_since),
        "failed_batches": failed_batches,
        "records_lost": records_lost,
    }
    return _event(RECOVERED_EVENT, detail, now)


def _event(event_type: str, detail: dict[str, Any], now: float) -> AuditRecord:
    return AuditRecord(
        phase="event",
        timestamp=now,
        event_id=new_event_id(now),
        event_type=event_type,
        detail=json.dumps(detail, separators=(",", ":")),
    )
