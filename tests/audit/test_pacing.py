from __future__ import annotations

import pytest

from mcp_gateway.audit.pacing import CALLS_PER_INTERVAL, MAX_STRETCH, OPEN_CALL_TTL_SECONDS, CommitPacer

from .conftest import make_record


def test_a_call_made_while_no_other_is_in_flight_is_never_held() -> None:
    pacer = CommitPacer(0.001)
    first = make_record()
    pacer.committed([first], now=10.0)
    pacer.taken([make_record("outcome", event_id=first.event_id)])  # that call is over
    assert pacer.open_calls == 0
    assert pacer.hold(someone_waits=True, last_commit_started=10.0, now=10.0001) == 0.0


def test_while_other_calls_are_in_flight_a_group_waits_out_the_interval_since_the_last_commit() -> None:
    pacer = CommitPacer(0.001)
    pacer.committed([make_record(), make_record()], now=10.0)
    assert pacer.open_calls == 2
    assert pacer.hold(someone_waits=True, last_commit_started=10.0, now=10.0004) == pytest.approx(0.0006)
    assert pacer.hold(someone_waits=True, last_commit_started=10.0, now=10.002) == 0.0  # long enough ago
    assert pacer.hold(someone_waits=False, last_commit_started=10.0, now=10.0004) == 0.0  # nobody is held


@pytest.mark.parametrize(
    ("in_flight", "stretch"),
    [(1, 1), (CALLS_PER_INTERVAL, 1), (2 * CALLS_PER_INTERVAL, 2), (8 * CALLS_PER_INTERVAL, 8), (10_000, MAX_STRETCH)],
)
def test_with_many_calls_in_flight_the_interval_stretches_in_proportion_up_to_a_cap(
    in_flight: int, stretch: float
) -> None:
    pacer = CommitPacer(0.001)
    pacer.committed([make_record() for _ in range(in_flight)], now=10.0)
    assert pacer.hold(someone_waits=True, last_commit_started=10.0, now=10.0) == pytest.approx(0.001 * stretch)


def test_only_intents_start_calls_and_only_their_outcomes_end_them() -> None:
    pacer = CommitPacer(0.001)
    intent = make_record()
    pacer.committed([intent, make_record("event"), make_record("outcome")], now=1.0)
    assert pacer.open_calls == 1
    pacer.taken([None, make_record("outcome")])  # a flush barrier, another call's outcome
    assert pacer.open_calls == 1
    pacer.taken([make_record("outcome", event_id=intent.event_id)])
    assert pacer.open_calls == 0


def test_a_call_whose_outcome_never_comes_stops_counting() -> None:
    pacer = CommitPacer(0.001)
    pacer.committed([make_record()], now=1.0)
    pacer.committed([], now=1.0 + OPEN_CALL_TTL_SECONDS)
    assert pacer.open_calls == 0


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        CommitPacer(-1)
