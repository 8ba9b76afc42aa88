from __future__ import annotations

import json

import pytest

from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.summary import SUMMARY_EVENT, RefusalSummarizer

from .conftest import BASE_TIME, make_record


def refusal(
    t: float, client: str = "10.0.0.1", server: str = "everything", reason: str = "unauthenticated"
) -> AuditRecord:
    return make_record(
        "event",
        timestamp=t,
        client_address=client,
        mcp_server=server,
        outcome=reason,
        http_status=401,
        decision="deny",
        agent_id=None,
        event_type="refusal",
    )


def test_the_first_refusal_is_written_and_the_rest_of_its_window_is_counted() -> None:
    summarizer = RefusalSummarizer(window_seconds=60)
    first = refusal(BASE_TIME)
    assert summarizer.observe(first) == [first]
    for i in range(1, 100):
        assert summarizer.observe(refusal(BASE_TIME + i * 0.5)) == []
    assert summarizer.flush(BASE_TIME + 59.9) == []
    (summary,) = summarizer.flush(BASE_TIME + 60)
    assert (summary.phase, summary.event_type, summary.outcome) == ("event", SUMMARY_EVENT, "unauthenticated")
    assert (summary.client_address, summary.mcp_server, summary.http_status) == ("10.0.0.1", "everything", 401)
    detail = json.loads(summary.detail or "")
    assert detail["count"] == 99 and detail["first_event_id"] == first.event_id and not detail["overflow"]
    assert summary.timestamp == BASE_TIME + 49.5
    assert summarizer.open_windows == 0
    assert summarizer.flush(BASE_TIME + 1000) == []


def test_a_window_without_repeats_needs_no_summary() -> None:
    summarizer = RefusalSummarizer(window_seconds=10)
    summarizer.observe(refusal(BASE_TIME))
    assert summarizer.flush(BASE_TIME + 11) == []


@pytest.mark.parametrize(
    "other",
    [
        refusal(BASE_TIME + 1, client="10.0.0.2"),
        refusal(BASE_TIME + 1, server="files"),
        refusal(BASE_TIME + 1, reason="invalid_token"),
    ],
)
def test_each_client_server_and_reason_has_its_own_window(other: AuditRecord) -> None:
    summarizer = RefusalSummarizer(window_seconds=60)
    summarizer.observe(refusal(BASE_TIME))
    assert summarizer.observe(other) == [other]


def test_an_explicit_reason_and_time_override_the_records_own() -> None:
    summarizer = RefusalSummarizer(window_seconds=60)
    summarizer.observe(refusal(BASE_TIME), reason="expired")
    assert summarizer.observe(refusal(BASE_TIME + 1), reason="expired") == []
    late = refusal(BASE_TIME + 1)
    assert summarizer.observe(late, reason="expired", now=BASE_TIME + 61)[-1] is late


def test_a_refusal_after_the_window_gets_the_summary_first_then_starts_a_new_window() -> None:
    summarizer = RefusalSummarizer(window_seconds=60)
    summarizer.observe(refusal(BASE_TIME))
    summarizer.observe(refusal(BASE_TIME + 1))
    late = refusal(BASE_TIME + 61)
    summary, written = summarizer.observe(late)
    assert summary.event_type == SUMMARY_EVENT and json.loads(summary.detail or "")["count"] == 1
    assert written is late
    assert summarizer.observe(refusal(BASE_TIME + 62)) == []


def test_memory_is_bounded_and_excess_keys_fold_into_one_overflow_summary() -> None:
    summarizer = RefusalSummarizer(window_seconds=60, max_keys=10)
    written = [
        r for i in range(1000) for r in summarizer.observe(refusal(BASE_TIME, client=f"10.0.{i // 256}.{i % 256}"))
    ]
    assert len(written) == 10
    assert summarizer.open_windows == 10
    summaries = summarizer.flush(BASE_TIME + 60)
    (overflow,) = [s for s in summaries if json.loads(s.detail or "")["overflow"]]
    assert json.loads(overflow.detail or "")["count"] == 990
    assert overflow.client_address is None and overflow.mcp_server is None
    assert summaries == [overflow]  # the ten windows had no repeats


def test_a_final_flush_summarizes_windows_that_are_still_open() -> None:
    summarizer = RefusalSummarizer(window_seconds=60, max_keys=1)
    summarizer.observe(refusal(BASE_TIME))
    summarizer.observe(refusal(BASE_TIME + 1))
    summarizer.observe(refusal(BASE_TIME + 2, client="10.9.9.9"))
    summaries = summarizer.flush(BASE_TIME + 3, final=True)
    assert [json.loads(s.detail or "")["count"] for s in summaries] == [1, 1]
    assert summarizer.open_windows == 0


@pytest.mark.parametrize(("window", "keys"), [(0, 10), (60, 0)])
def test_nonsense_settings_are_refused(window: float, keys: int) -> None:
    with pytest.raises(ValueError):
        RefusalSummarizer(window_seconds=window, max_keys=keys)
