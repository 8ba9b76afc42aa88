from __future__ import annotations

import pytest

from mcp_gateway.audit.sink import AuditSink, FailingAuditSink, MemoryAuditSink
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from mcp_gateway.errors import AuditUnavailable, GatewayError

from .conftest import make_record

pytestmark = pytest.mark.anyio


def test_every_sink_satisfies_the_protocol(tmp_path: object) -> None:
    for sink in (MemoryAuditSink(), FailingAuditSink(), SQLiteAuditSink("unused.db")):
        assert isinstance(sink, AuditSink)


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
