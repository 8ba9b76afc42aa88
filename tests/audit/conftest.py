"""Fixtures for the audit tests: a record factory, and a log file written with the real SQLite sink."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_gateway.audit.record import AuditRecord, new_event_id
from mcp_gateway.audit.sqlite import SQLiteAuditSink

BASE_TIME = 1_795_867_200.0  # 2026-11-28T12:00:00Z

RecordFactory = Callable[..., AuditRecord]


def make_record(phase: str = "intent", *, timestamp: float = BASE_TIME, **fields: Any) -> AuditRecord:
    defaults: dict[str, Any] = {
        "event_id": new_event_id(timestamp),
        "agent_id": "agent-7",
        "delegating_user": "alice@example.com",
        "session_id": "sess-1",
        "mcp_server": "everything",
        "method": "tools/call",
        "tool": "echo",
        "scope_granted": ("tools:call", "tools:read"),
        "scopes_required": ("tools:read",),
        "token_ttl": 1800,
        "token_id": "jti-1",
        "request_context": "summarize the quarterly report",
        "decision": "allow",
        "policy_rule": "tool_scopes.echo",
        "policy_version": "ab" * 32,
        "arguments_sha256": "cd" * 32,
        "client_address": "127.0.0.1",
        "upstream_identity": "spki:abc",
    }
    defaults.update(fields)
    return AuditRecord(phase=phase, timestamp=timestamp, **defaults)  # type: ignore[arg-type]


@pytest.fixture
def record() -> RecordFactory:
    return make_record


async def write_records(path: Path, records: Sequence[AuditRecord]) -> None:
    """Append `records` to the log at `path` through the SQLite sink, as the gateway would."""
    sink = SQLiteAuditSink(path)
    with anyio.fail_after(10):
        await sink.start()
        for record in records:
            await sink.append(record)
        await sink.aclose()
