from __future__ import annotations

import pytest

from mcp_gateway.audit.sink import AuditSink, FailingAuditSink, MemoryAuditSink, NullAuditSink
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.audit.store import AuditSinkStats
from mcp_gateway.errors import AuditUnavailable, GatewayError

from .conftest import make_record

pytestmark = pytest.mark.anyio


def test_every_sink_satisfies_the_protocol(tmp_path: object) -> None:
    for sink in (MemoryAuditSink(), FailingAuditSink(), NullAuditSink(), SQLiteAuditSink("unused.db")):
        assert isinstance(sink, AuditSink)
    # The same, checked by mypy: each one is assignable where the gateway wants a sink.
    sinks: list[AuditSink] = [MemoryAuditSink(), FailingAuditSink(), NullAuditSink(), SQLiteAuditSink("unused.db")]
    assert all(isinstance(sink.stats, AuditSinkStats) for sink in sinks)


async def test_sinks_without_a_store_count_what_they_kept_and_lost() -> None:
    memory = MemoryAuditSink()
    await memory.start()
    await memory.append(make_record())
    memory.append_nowait(make_record("outcome"))
    memory.failing = True
    memory.append_nowait(make_record("event"))
    assert memory.stats == AuditSinkStats(appended=2, commits=2, lost=1)
    failing = FailingAuditSink()
    with pytest.raises(AuditUnavailable):
        await failing.append(make_record())
    failing.append_nowait(make_record("outcome"))
    assert failing.stats == AuditSinkStats(failed_batches=1, lost=1)
    assert NullAuditSink().stats == AuditSinkStats()


async def test_memory_sink_keeps_records_in_order_until_it_is_made_to_fail() -> None:
    sink = MemoryAuditSink()
    with pytest.raises(AuditUnavailable):
        await sink.append(make_record())  # not started
    await sink.start()
    first, second = make_record(), make_record(phase="outcome")
    await sink.append(first)
    sink.append_nowait(second)
    assert sink.records == [first, second]
    assert sink.healthy
    sink.failing = True
    assert not sink.healthy
    with pytest.raises(AuditUnavailable):
        await sink.append(make_record())
    sink.append_nowait(make_record())
    assert (len(sink.records), sink.lost) == (2, 1)
    await sink.aclose()
    assert not sink.healthy


async def test_failing_sink_refuses_every_append_with_a_503_error() -> None:
    sink = FailingAuditSink()
    await sink.start()
    with pytest.raises(AuditUnavailable) as info:
        await sink.append(make_record())
    assert isinstance(info.value, GatewayError)
    assert info.value.status_code == 503
    sink.append_nowait(make_record())
    assert (sink.attempts, sink.lost, sink.healthy) == (1, 1, False)
    await sink.aclose()
