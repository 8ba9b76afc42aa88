"""The official conformance suite passes against the example server, directly and through the bearer forwarder.

Needs the npm dependencies (``npm ci``); without them these tests fail and say so. Set
``MCPGW_SKIP_CONFORMANCE=1`` to skip them.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from tests._servers import run_example_server
from tests.conformance.forwarder import bearer_forwarder
from tests.conformance.harness import (
    BASELINE_TEMPLATE,
    INSTALL_HINT,
    SPEC_VERSIONS,
    format_run,
    run_suite,
    suite_installed,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MCPGW_SKIP_CONFORMANCE") == "1", reason="MCPGW_SKIP_CONFORMANCE=1"),
]

# Checks the pinned suite (package.json) runs at each version: a scenario that silently stops running (its
# fixture renamed, say) shows up here even though nothing fails. Update these when the suite is bumped.
CHECKS_RUN = {"2025-11-25": 84, "2026-07-28": 152}
SUITE_TIMEOUT = 90


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _suite_installed() -> None:
    if not suite_installed():
        pytest.fail(INSTALL_HINT)


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_example_server_passes_every_conformance_check(spec_version: str, tmp_path: Path) -> None:
    baseline = Path(BASELINE_TEMPLATE.format(version=spec_version))
    async with run_example_server() as url:
        with anyio.fail_after(SUITE_TIMEOUT):
            run = await run_suite(url, spec_version, tmp_path, baseline=baseline)
    assert run.ok, format_run(run)
    assert run.report.total == CHECKS_RUN[spec_version], format_run(run)


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
async def test_the_bearer_forwarder_is_invisible_to_the_suite(spec_version: str, tmp_path: Path) -> None:
    baseline = Path(BASELINE_TEMPLATE.format(version=spec_version))
    async with run_example_server() as url, bearer_forwarder(url, "conformance-token") as forwarded:
        with anyio.fail_after(SUITE_TIMEOUT):
            run = await run_suite(forwarded, spec_version, tmp_path, baseline=baseline)
    assert run.ok, format_run(run)
    assert run.report.total == CHECKS_RUN[spec_version], format_run(run)
