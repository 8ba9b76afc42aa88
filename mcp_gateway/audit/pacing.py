"""When the audit writer commits: a group is held for company only while other calls are in flight."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from mcp_gateway.audit.record import AuditRecord

# How long a call counts as in flight without its outcome, and how many are tracked at most: a call whose
# outcome never comes (a lost record, a bug elsewhere) must not make every later group wait.
OPEN_CALL_TTL_SECONDS: Final = 60.0
OPEN_CALLS_MAX: Final = 100_000
# The interval is for up to CALLS_PER_INTERVAL calls in flight; with more, it stretches in proportion, up
# to MAX_STRETCH times. Measured (bench/overhead.py, C=64, both eras): holding 4-8 ms instead of 1 ms cut
# the gateway's CPU per call by 10-20% at the same throughput, since with that many calls in flight the
# upstream always has others to serve; at C=8 anything over ~1 ms cost throughput.
CALLS_PER_INTERVAL: Final = 8
MAX_STRETCH: Final = 8


class CommitPacer:
    """Spaces commits under load so that one commit (one fsync) serves several calls.

    A group that someone waits for is held until `interval` after the previous commit started, but only
    while other calls are in flight (their intents committed, their outcomes not seen yet): their clients
    are what brings more intents soon. A call made while no other is in flight is never held, so at
    concurrency 1 nothing waits. With more than CALLS_PER_INTERVAL calls in flight the interval stretches
    in proportion (at most MAX_STRETCH times): the more calls are in flight, the more intents arrive
    during a hold, and the less holding a few of them delays the rest. Pure: time is passed in.
    """

    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("the commit interval must not be negative")
        self.interval = interval
        self._open: dict[str, float] = {}  # event id → when its intent was committed

    @property
    def open_calls(self) -> int:
        return len(self._open)

    def taken(self, records: Iterable[AuditRecord | None]) -> None:
        """Records taken off the queue: an outcome ends its call, whether or not it is then written."""
        for record in records:
            if record is not None and record.phase == "outcome":
                self._open.pop(record.event_id, None)

    def committed(self, records: Iterable[AuditRecord], now: float) -> None:
        """Records now durable: an intent starts a call in flight."""
        open_calls = self._open
        for record in records:
            if record.phase == "intent":
                open_calls[record.event_id] = now
        while open_calls:  # insertion order is commit order: the oldest come first
            event_id, since = next(iter(open_calls.items()))
            if now - since < OPEN_CALL_TTL_SECONDS and len(open_calls) <= OPEN_CALLS_MAX:
                break
            del open_calls[event_id]

    def hold(self, *, someone_waits: bool, last_commit_started: float, now: float) -> float:
        """Seconds to wait before committing a group (0: commit now)."""
        open_calls = len(self._open)
        if not (someone_waits and open_calls):
            return 0.0
        stretch = min(MAX_STRETCH, max(1, open_calls / CALLS_PER_INTERVAL))
        return max(0.0, last_commit_started + self.interval * stretch - now)
