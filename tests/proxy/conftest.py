"""Fixtures shared by the proxy tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    """A plain client for raw requests to a gateway stack (each test gets its own connections)."""
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client
