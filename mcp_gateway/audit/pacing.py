"""When the audit writer commits: a group is held for company only while other calls are in flight."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from mcp_gateway.audit.record import AuditRecord

# How long a call counts as in flight without its outcome, and how many are tracked at most: a call whose
# outcome never comes (a lost record, a bug elsewhere) must not make every later group wait.
OPEN_CALL_TTL_SECONDS: Final = 60.0
OPEN_CALLS_MAX: Final = 100_000


class CommitPacer:
    """Spaces commits under load so that one commit (one fsync) serves several calls.

    A group that someone waits for is held until `interval` after the previous commit started, but only
    while other calls are in flight (their intents committed, their outcomes not seen yet): their clients
    are what brings more intents soon. A call made while no other is in flight is never held, so at
    concurrency 1 nothing waits; under load an intent waits at most `interval`. Pure: time is passed in.
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
        if not (someone_waits and self._open):
            return 0.0
        return max(0.0, last_commit_started + self.interval - now)
