"""The ids that tie a request's log lines to its audit record and its trace (context variables, per task)."""

from __future__ import annotations

from contextvars import ContextVar

# Set where the audit event id is drawn (proxy/recording.py) and where the request span starts
# (observe/tracing.py). Each request runs in its own task, whose context is a copy: nothing leaks between them.
event_id: ContextVar[str | None] = ContextVar("mcp_gateway_event_id", default=None)
trace_id: ContextVar[str | None] = ContextVar("mcp_gateway_trace_id", default=None)
