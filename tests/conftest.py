"""Shared pytest configuration: anyio's own plugin on the asyncio backend (the gateway is asyncio-only)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope (anyio's own default) lets module-scoped async fixtures, such as one gateway stack shared
    # by a module's tests, run in the same event loop as the tests; function-scoped tests are unaffected.
    return "asyncio"
