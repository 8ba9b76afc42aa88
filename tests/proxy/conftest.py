"""The proxy tests share one gateway stack per module where they can: a stack costs ~0.7 s to start and stop."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope lets module-scoped async fixtures (a shared stack) run in the same event loop as the tests.
    return "asyncio"
