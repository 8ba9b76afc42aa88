"""Folding floods of unauthenticated refusals into one full record plus periodic summary records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from mcp_gateway.audit.record import AuditRecord, format_timestamp, new_event_id

SUMMARY_EVENT: Final = "unauthenticated_summary"

_Key = tuple[str | None, str | None, str | None]


@dataclass
class _Window:
    first: AuditRecord  # the refusal that opened the window
    start: float
    last: float
    folded: int = 0  # refusals counted instead of written


class RefusalSummarizer:
    """Per (client_address, mcp_server, reason): the first unauthenticated refusal in a window is
    audited in full; the rest of that window become one `unauthenticated_summary` event with a count.

    No clock is read: time comes from `now` (default: the record's timestamp) and `flush`'s argument.
    Memory is bounded by `max_keys` open windows; refusals for further keys are counted in one overflow
    bucket (its first refusal is not written in full either) and summarized the same way.
    """

    def __init__(self, window_seconds: float, *, max_keys: int = 10_000) -> None:
        if window_seconds <= 0 or max_keys < 1:
            raise ValueError("window_seconds and max_keys must be positive")
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self._windows: dict[_Key, _Window] = {}  # insertion order is window start order
        self._overflow: _Window | None = None

    def observe(self, record: AuditRecord, *, now: float | None = None, reason: str | None = None) -> list[AuditRecord]:
        """The records to write now: summaries of windows that have ended, then `record` itself if it
        opens a new window (it is left out, and counted, if its key's window is still open).

        `reason` (default: the record's `outcome`) tells e.g. a missing token from an expired one.
        """
        now = record.timestamp if now is None else now
        due = self._due(now, final=False)
        key = (record.client_address, record.mcp_server, reason if reason is not None else record.outcome)
        window = self._windows.get(key)
        if window is not None:
            window.folded += 1
            window.last = max(window.last, now)
        elif len(self._windows) >= self.max_keys:
            self._count_overflow(record, now)
        else:
            self._windows[key] = _Window(record, now, now)
            due.append(record)
        return due

    def flush(self, now: float, *, final: bool = False) -> list[AuditRecord]:
        """Summaries of the windows that have ended by `now`; with `final` (at shutdown), of all of them.

        Call it from a periodic task so a flood that stops is still summarized promptly.
        """
        return self._due(now, final=final)

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    def _due(self, now: float, *, final: bool) -> list[AuditRecord]:
        due: list[AuditRecord] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if not final and now < window.start + self.window_seconds:
                break
            del self._windows[key]
            if window.folded:
                due.append(self._summary(window, key[2], overflow=False))
        if self._overflow is not None and (final or now >= self._overflow.start + self.window_seconds):
            due.append(self._summary(self._overflow, None, overflow=True))
            self._overflow = None
        return due

    def _count_overflow(self, record: AuditRecord, now: float) -> None:
        if self._overflow is None:
            self._overflow = _Window(record, now, now)
        self._overflow.folded += 1
        self._overflow.last = max(self._overflow.last, now)

    def _summary(self, window: _Window, reason: str | None, *, overflow: bool) -> AuditRecord:
        first = window.first
        detail = {
            "count": window.folded,
            "window_start": format_timestamp(window.start),
            "window_end": format_timestamp(window.last),
            "window_seconds": self.window_seconds,
            "first_event_id": None if overflow else first.event_id,
            "overflow": overflow,
            "reason": reason,
        }
        return AuditRecord(
            phase="event",
            timestamp=window.last,
            event_id=new_event_id(window.last),
            client_address=None if overflow else first.client_address,
            mcp_server=None if overflow else first.mcp_server,
            # The outcome vocabulary is fixed (DESIGN.md); why the window's refusals happened is in detail.
            outcome=first.outcome,
            http_status=None if overflow else first.http_status,
            decision=first.decision,
            event_type=SUMMARY_EVENT,
            detail=json.dumps(detail, separators=(",", ":")),
        )
