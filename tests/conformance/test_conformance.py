"""The official conformance suite: the example server passes it, and the gateway in front of it passes the same checks.

Each version runs once directly against a fresh example server (a module-scoped fixture), then through the
bearer forwarder alone and through a whole gateway stack (example upstream, dev issuer, gateway; a real token),
and those runs must end every check the way the direct run did. Only deliberate security decisions may differ,
and only when listed with their reason in ``expected-failures-gateway-<version>.yml``.

Needs the npm dependencies (``npm ci``); without them these tests fail and say so. Set
``MCPGW_SKIP_CONFORMANCE=1`` to skip them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests._servers import run_example_server
from tests.conformance.forwarder import bearer_forwarder
from tests.conformance.harness import (
    BASELINE_TEMPLATE,
    INSTALL_HINT,
    SPEC_VERSIONS,
    SuiteRun,
    compare_reports,
    format_comparison,
    format_run,
    run_suite,
    run_suite_through_gateway,
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


@pytest.fixture(scope="module", autouse=True)
def _suite_installed() -> None:
    if not suite_installed():
        pytest.fail(INSTALL_HINT)


@pytest.fixture(scope="module", params=SPEC_VERSIONS)
def spec_version(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


@pytest.fixture(scope="module")
async def direct_run(anyio_backend: str, spec_version: str, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The suite at one version directly against a fresh example server: the reference every other run meets."""
    baseline = Path(BASELINE_TEMPLATE.format(version=spec_version))
    async with run_example_server() as url:
        with anyio.fail_after(SUITE_TIMEOUT):
            return await run_suite(url, spec_version, tmp_path_factory.mktemp("direct"), baseline=baseline)


@pytest.fixture(scope="module")
async def gateway_run(anyio_backend: str, spec_version: str, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The suite at one version through a fresh gateway stack, with a real token from the dev issuer."""
    with anyio.fail_after(SUITE_TIMEOUT):
        return await run_suite_through_gateway(spec_version, tmp_path_factory.mktemp("gateway"))


def test_example_server_passes_every_conformance_check(direct_run: SuiteRun) -> None:
    assert direct_run.ok, format_run(direct_run)
    assert direct_run.report.total == CHECKS_RUN[direct_run.spec_version], format_run(direct_run)


async def test_the_bearer_forwarder_is_invisible_to_the_suite(direct_run: SuiteRun, tmp_path: Path) -> None:
    # What differs through the gateway is then the gateway's doing, never the forwarder's.
    version = direct_run.spec_version
    baseline = Path(BASELINE_TEMPLATE.format(version=version))
    async with run_example_server() as url, bearer_forwarder(url, "conformance-token") as forwarded:
        with anyio.fail_after(SUITE_TIMEOUT):
            run = await run_suite(forwarded, version, tmp_path, baseline=baseline)
    assert run.ok, format_run(run)
    if compare_reports(direct_run.report, run.report):
        pytest.fail(format_comparison(version, direct_run, run, "forwarder"))


async def test_the_gateway_passes_the_same_conformance_checks_as_its_upstream(
    direct_run: SuiteRun, gateway_run: SuiteRun
) -> None:
    if compare_reports(direct_run.report, gateway_run.report):
        pytest.fail(format_comparison(direct_run.spec_version, direct_run, gateway_run))
    assert gateway_run.ok, format_run(gateway_run)


async def test_the_gateway_with_every_tool_pinned_passes_the_same_conformance_checks_as_its_upstream(
    direct_run: SuiteRun, tmp_path: Path
) -> None:
    # With tools_sha256 the catalogue judges every call: unknown tools must look as the upstream makes them
    # look, and arguments are validated against the pinned schemas, yet no check may end differently.
    with anyio.fail_after(SUITE_TIMEOUT):
        pinned_run = await run_suite_through_gateway(direct_run.spec_version, tmp_path, pinned=True)
    if compare_reports(direct_run.report, pinned_run.report):
        pytest.fail(format_comparison(direct_run.spec_version, direct_run, pinned_run))
    assert pinned_run.ok, format_run(pinned_run)


def test_the_gateway_itself_refuses_a_dns_rebinding_host(gateway_run: SuiteRun) -> None:
    # The forwarder passes the suite's forged Host and Origin through untouched and the gateway never relays
    # Host upstream, so this scenario tests the gateway alone. 421 (not the 403 a forged Origin alone would
    # get) shows that the forged Host arrived; a JSON-RPC body (the upstream's own refusal is plain text)
    # shows that the gateway answered it.
    name = "dns-rebinding-protection:localhost-host-rebinding-rejected"
    (rebinding,) = [c for c in gateway_run.report.checks if c.name == name]
    details = rebinding.details or {}
    assert rebinding.status == "SUCCESS", format_run(gateway_run)
    assert (details.get("hostHeader"), details.get("statusCode")) == ("evil.example.com", 421)
    assert isinstance(details.get("body"), dict) and "error" in details["body"], details
