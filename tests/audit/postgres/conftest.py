"""The real PostgreSQL for the PostgreSQL store's tests: one fresh schema per test, dropped afterwards.

The server is MCP_GATEWAY_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test). Under CI=true a
server that cannot be reached fails every test here; elsewhere they are skipped, loudly.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from ._pg import SERVER_URL, execute, schema_url


def _unreachable() -> str | None:
    try:
        asyncio.run(execute(SERVER_URL, "SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _unreachable()
    if problem is not None:
        message = f"PostgreSQL is not reachable at {SERVER_URL} ({problem})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(f"!!! SKIPPING THE POSTGRESQL AUDIT TESTS: {message}. Start PostgreSQL to run them.")
    return SERVER_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL whose search path is a new, empty schema of its own."""
    schema = "t_" + os.urandom(6).hex()
    asyncio.run(execute(pg_server, f"CREATE SCHEMA {schema}"))
    try:
        yield schema_url(pg_server, schema)
    finally:
        asyncio.run(execute(pg_server, f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
