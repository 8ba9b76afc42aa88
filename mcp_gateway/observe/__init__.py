"""Observability: structured logs and OpenTelemetry traces, both off the hot path when not asked for."""
