"""Fixtures for the development issuer's tests: an injected clock."""

from __future__ import annotations

import pytest

from tests.auth._support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
