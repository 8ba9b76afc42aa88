"""The audit trail: records, the store seam (sinks write, readers query), refusal summaries."""

from __future__ import annotations

from mcp_gateway.audit.canonical import canonical_record_bytes, chain_hash
from mcp_gateway.audit.query import ExportResult, QueryFilters, VerifyResult, parse_time
from mcp_gateway.audit.record import (
    GENESIS_HASH,
    AuditRecord,
    arguments_digest,
    arguments_json,
    format_timestamp,
    new_event_id,
    outcome_of,
    redact,
)
from mcp_gateway.audit.sink import FailingAuditSink, MemoryAuditSink, NullAuditSink
from mcp_gateway.audit.store import (
    AuditLocation,
    AuditReader,
    AuditReadError,
    AuditSink,
    AuditSinkStats,
    AuditStore,
    SchemaError,
)
from mcp_gateway.audit.stores import audit_location, open_audit_reader, open_audit_store
from mcp_gateway.audit.summary import RefusalSummarizer

__all__ = [
    "GENESIS_HASH",
    "AuditLocation",
    "AuditReadError",
    "AuditReader",
    "AuditRecord",
    "AuditSink",
    "AuditSinkStats",
    "AuditStore",
    "ExportResult",
    "FailingAuditSink",
    "MemoryAuditSink",
    "NullAuditSink",
    "QueryFilters",
    "RefusalSummarizer",
    "SchemaError",
    "VerifyResult",
    "arguments_digest",
    "arguments_json",
    "audit_location",
    "canonical_record_bytes",
    "chain_hash",
    "format_timestamp",
    "new_event_id",
    "open_audit_reader",
    "open_audit_store",
    "outcome_of",
    "parse_time",
    "redact",
]
