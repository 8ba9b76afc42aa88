"""The audit trail: records, durable sinks, refusal summaries, and the auditor's queries."""

from __future__ import annotations

from mcp_gateway.audit.query import ExportResult, QueryFilters, VerifyResult, export, parse_time, query, verify
from mcp_gateway.audit.record import (
    GENESIS_HASH,
    AuditRecord,
    arguments_digest,
    arguments_json,
    canonical_record_bytes,
    chain_hash,
    format_timestamp,
    new_event_id,
    outcome_of,
    redact,
)
from mcp_gateway.audit.sink import AuditSink, FailingAuditSink, MemoryAuditSink
from mcp_gateway.audit.sqlite import AuditSinkStats, SQLiteAuditSink
from mcp_gateway.audit.summary import RefusalSummarizer

__all__ = [
    "GENESIS_HASH",
    "AuditRecord",
    "AuditSink",
    "AuditSinkStats",
    "ExportResult",
    "FailingAuditSink",
    "MemoryAuditSink",
    "QueryFilters",
    "RefusalSummarizer",
    "SQLiteAuditSink",
    "VerifyResult",
    "arguments_digest",
    "arguments_json",
    "canonical_record_bytes",
    "chain_hash",
    "export",
    "format_timestamp",
    "new_event_id",
    "outcome_of",
    "parse_time",
    "query",
    "redact",
    "verify",
]
