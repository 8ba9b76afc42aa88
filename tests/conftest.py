"""Shared pytest configuration: anyio's own plugin on the asyncio backend (the gateway is asyncio-only)."""

from __future__ import annotations

import pytest
from hypothesis import settings


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope (anyio's own default) lets module-scoped async fixtures, such as one gateway stack shared
    # by a module's tests, run in the same event loop as the tests; function-scoped tests are unaffected.
    return "asyncio"


# Hypothesis' per-example deadline (200 ms) measures the machine, not the code: on a loaded 2-core CI box
# an example can take longer and fail a property that holds. Examples are still bounded by max_examples.
settings.register_profile("gateway", deadline=None)
settings.load_profile("gateway")
