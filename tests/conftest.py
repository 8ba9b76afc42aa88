"""Shared pytest configuration: anyio's own plugin on the asyncio backend (the gateway is asyncio-only)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
