"""Counting upstream credential failures, read by the metrics endpoint at scrape time."""

from __future__ import annotations

from collections import Counter

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class CredentialFailures:
    """Failures by (server, credential type, reason): every label is from config or a fixed set, never a secret."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def count(self, server: str, credential_type: str, reason: str) -> None:
        self.counts[(server, credential_type, reason)] += 1


class CredentialFailureCollector(Collector):
    """`mcp_gateway_upstream_credential_failures_total{server, type, reason}`, read at scrape time."""

    def __init__(self, failures: CredentialFailures) -> None:
        self.failures = failures

    def collect(self) -> list[Metric]:
        counter = CounterMetricFamily(
            "mcp_gateway_upstream_credential_failures",
            "Upstream calls refused for want of an upstream credential (502), by server, type and reason",
            labels=["server", "type", "reason"],
        )
        for (server, kind, reason), value in sorted(self.failures.counts.items()):
            counter.add_metric([server, kind, reason], float(value))
        return [counter]
