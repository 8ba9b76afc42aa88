from __future__ import annotations

import pytest

from mcp_gateway.audit.query import parse_time

from .conftest import BASE_TIME


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", BASE_TIME - 1800),
        ("1h", BASE_TIME - 3600),
        ("2d", BASE_TIME - 2 * 86400),
        ("1w", BASE_TIME - 7 * 86400),
        ("1.5h", BASE_TIME - 5400),
        ("45s", BASE_TIME - 45),
        ("2026-11-28T12:00:00Z", BASE_TIME),
        ("2026-11-28T12:00:00.250Z", BASE_TIME + 0.25),
        ("2026-11-28T14:00:00+02:00", BASE_TIME),
        ("2026-11-28T12:00:00", BASE_TIME),
        ("2026-11-28", BASE_TIME - 12 * 3600),
    ],
)
def test_since_accepts_durations_and_iso_times(text: str, expected: float) -> None:
    assert parse_time(text, now=BASE_TIME) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "5 minutes", "-1h", "1y"])
def test_since_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="30m"):
        parse_time(text, now=BASE_TIME)
