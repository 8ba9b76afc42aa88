"""The application's audit wiring: /metrics reads the counters of whatever store it was given."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.app import create_app
from mcp_gateway.audit.sink import AuditSink, MemoryAuditSink
from mcp_gateway.audit.store import AuditSinkStats
from mcp_gateway.config import load_config
from tests._configs import write_config
from tests.audit.conftest import make_record

pytestmark = pytest.mark.anyio


class CountedSink(MemoryAuditSink):
    """A store that reports a different number for every counter, so each metric's source shows."""

    @property
    def stats(self) -> AuditSinkStats:
        return AuditSinkStats(
            appended=11, commits=7, failed_batches=5, rejected=3, lost=2, queue_full=13, queue_depth=17
        )


async def scrape(tmp_path: Path, sink: AuditSink) -> dict[str, float]:
    write_config(tmp_path)
    app = create_app(load_config(tmp_path / "gateway.toml"), audit=sink, secrets={})
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw") as client:
        with anyio.fail_after(10):
            text = (await client.get("/metrics")).text
    return {
        name: float(value)
        for name, value in (line.split() for line in text.splitlines() if line.startswith("mcp_gateway_audit_"))
    }


async def test_metrics_come_from_the_stats_of_any_store(tmp_path: Path) -> None:
    metrics = await scrape(tmp_path, CountedSink())
    assert metrics == {
        "mcp_gateway_audit_healthy": 0.0,  # never started
        "mcp_gateway_audit_records_appended_total": 11.0,
        "mcp_gateway_audit_commits_total": 7.0,
        "mcp_gateway_audit_failed_batches_total": 5.0,
        "mcp_gateway_audit_records_rejected_total": 3.0,
        "mcp_gateway_audit_records_lost_total": 2.0,
        "mcp_gateway_audit_queue_full_total": 13.0,
        "mcp_gateway_audit_queue_depth": 17.0,
    }


async def test_a_memory_stores_own_counts_reach_the_metrics(tmp_path: Path) -> None:
    sink = MemoryAuditSink()
    await sink.start()
    await sink.append(make_record())
    await sink.aclose()
    sink.append_nowait(make_record("outcome"))  # closed: counted as lost
    metrics = await scrape(tmp_path, sink)
    assert metrics["mcp_gateway_audit_records_appended_total"] == 1.0
    assert metrics["mcp_gateway_audit_records_lost_total"] == 1.0
