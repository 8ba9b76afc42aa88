"""Run the pinned MCP conformance suite (server mode) against a URL and judge its per-check results.

The suite, ``@modelcontextprotocol/conformance``, and the Node 22 it needs are npm dependencies of this
repository (``npm ci`` installs both into ``node_modules/``). With ``-o DIR`` the suite writes one directory per
scenario, ``server-<scenario>-<timestamp>/checks.json``, each a JSON list of checks ``{id, status, ...}`` with
status ``SUCCESS``, ``FAILURE``, ``WARNING``, ``SKIPPED`` or ``INFO``; that is what is read here, not the log.

A baseline lists checks allowed to fail, in the suite's own expected-failures format (entries under
``server:`` name a whole scenario or one ``scenario:check-id``). A run passes when every failing check is in
the baseline and every baseline entry still fails: a fixed failure must leave the baseline.

Command line (``scripts/conformance`` wraps it)::

    python -m tests.conformance.harness URL [--spec-version V ...] [--out DIR] [--token T | --token-env VAR]

With a token, a loopback forwarder (``tests.conformance.forwarder``) adds ``Authorization: Bearer <token>``,
so the same command checks the example server directly or an endpoint of the gateway. ``--gateway-stack``
starts everything itself (``tests/_stack.py``: the example upstream, the dev issuer and the gateway on loopback),
runs each version directly against a fresh example server and through the gateway, and compares them per check::

    python -m tests.conformance.harness --gateway-stack [--spec-version V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests.conformance.forwarder import bearer_forwarder

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE = REPO_ROOT / "node_modules" / "node" / "bin" / "node"
SUITE = REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SPEC_VERSIONS = ("2025-11-25", "2026-07-28")
DEFAULT_OUT = REPO_ROOT / ".conformance"
BASELINE_TEMPLATE = str(Path(__file__).parent / "expected-failures-{version}.yml")
# Checks that may differ through the gateway: only deliberate security decisions, each with its reason.
GATEWAY_BASELINE_TEMPLATE = str(Path(__file__).parent / "expected-failures-gateway-{version}.yml")
# The allowlist the gateway runs the suite with: every fixture tool, resource and prompt falls back to
# default_scopes, and server-to-client requests (sampling, elicitation, roots) keep their default: relayed.
GATEWAY_ALLOWLIST = 'default_scopes = ["tools:call"]\n'
GATEWAY_SCOPES = ("tools:call",)
INSTALL_HINT = (
    "The conformance suite is not installed. Run `npm ci` in the repository root: it installs the pinned "
    "@modelcontextprotocol/conformance and a Node 22 binary (npm package `node`) into node_modules/. "
    "Set MCPGW_SKIP_CONFORMANCE=1 to skip the conformance tests instead."
)

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


class SuiteNotInstalledError(RuntimeError):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


@dataclass(frozen=True)
class Check:
    scenario: str
    id: str
    status: str
    message: str = ""
    details: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def name(self) -> str:
        """The name a baseline uses for this check: ``scenario:check-id``."""
        return f"{self.scenario}:{self.id}"


@dataclass(frozen=True)
class Report:
    """The checks of one suite run, judged against a baseline."""

    checks: tuple[Check, ...]
    baseline: frozenset[str] = frozenset()

    def _count(self, status: str) -> int:
        return sum(check.status == status for check in self.checks)

    @property
    def passed(self) -> int:
        return self._count("SUCCESS")

    @property
    def failed(self) -> int:
        return self._count("FAILURE")

    @property
    def warnings(self) -> int:
        return self._count("WARNING")

    @property
    def total(self) -> int:
        """Checks that pass or fail, the suite's own denominator (warnings and skips are not counted)."""
        return self.passed + self.failed

    def _excused(self, check: Check) -> bool:
        return check.scenario in self.baseline or check.name in self.baseline

    @property
    def unexpected_failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "FAILURE" and not self._excused(c))

    @property
    def expected_failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "FAILURE" and self._excused(c))

    @property
    def stale_baseline_entries(self) -> tuple[str, ...]:
        failing = {c.name for c in self.checks if c.status == "FAILURE"}
        failing |= {c.scenario for c in self.checks if c.status == "FAILURE"}
        return tuple(sorted(self.baseline - failing))

    @property
    def ok(self) -> bool:
        return self.total > 0 and not self.unexpected_failures and not self.stale_baseline_entries

    def scenarios(self) -> dict[str, tuple[int, int]]:
        """Scenario name → (checks passed, checks failed), in the order the suite ran them."""
        counts: dict[str, tuple[int, int]] = {}
        for check in self.checks:
            passed, failed = counts.get(check.scenario, (0, 0))
            counts[check.scenario] = (passed + (check.status == "SUCCESS"), failed + (check.status == "FAILURE"))
        return counts


def read_checks(out_dir: Path) -> tuple[Check, ...]:
    """Read every ``server-<scenario>-<timestamp>/checks.json`` under ``out_dir``, oldest first."""
    checks: list[Check] = []
    for result_dir in sorted(out_dir.iterdir(), key=lambda p: p.name[-24:]):
        match = _RESULT_DIR.match(result_dir.name)
        checks_file = result_dir / "checks.json"
        if match is None or not checks_file.is_file():
            continue
        for raw in json.loads(checks_file.read_text()):
            message = raw.get("errorMessage") or ""
            details = raw.get("details") if isinstance(raw.get("details"), dict) else None
            checks.append(Check(match["scenario"], str(raw["id"]), str(raw["status"]), str(message), details))
    return tuple(checks)


def parse_baseline(text: str) -> frozenset[str]:
    """The ``server:`` entries of an expected-failures file (the small YAML subset those files use)."""
    entries: set[str] = set()
    section: str | None = None
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "-")):
            key, _, value = line.partition(":")
            section = key.strip()
            if value.strip() not in ("", "[]"):
                raise ValueError(f"expected a list under {section!r}, got {value.strip()!r}")
        elif section == "server" and line.strip().startswith("- "):
            entries.add(line.strip()[2:].strip().strip("'\""))
    return frozenset(entries)


def load_baseline(path: Path | None) -> frozenset[str]:
    return parse_baseline(path.read_text()) if path is not None and path.is_file() else frozenset()


def outcomes(report: Report) -> dict[str, tuple[str, ...]]:
    """Each ``scenario:check-id`` with the statuses it ended in (sorted), INFO entries left out.

    INFO entries are the suite's log lines (one per SSE event seen, say): how many there are depends on
    timing, not on conformance. A check id may legitimately repeat (one per probe), hence a tuple.
    """
    statuses: dict[str, list[str]] = {}
    for check in report.checks:
        if check.status != "INFO":
            statuses.setdefault(check.name, []).append(check.status)
    return {name: tuple(sorted(found)) for name, found in statuses.items()}


@dataclass(frozen=True)
class Difference:
    """One check whose outcomes differ between a reference run and another run of the same version."""

    name: str
    reference: tuple[str, ...]  # () when the check did not run
    observed: tuple[str, ...]
    message: str  # what the suite said about the observed run's non-SUCCESS outcome, if anything


def compare_reports(reference: Report, observed: Report) -> tuple[Difference, ...]:
    """Per-check differences between two runs; checks the observed run's baseline names are excused."""
    ours, theirs = outcomes(reference), outcomes(observed)
    differences = []
    for name in sorted(ours.keys() | theirs.keys()):
        if name in observed.baseline or name.split(":", 1)[0] in observed.baseline:
            continue
        before, after = ours.get(name, ()), theirs.get(name, ())
        if before != after:
            message = next((c.message for c in observed.checks if c.name == name and c.status != "SUCCESS"), "")
            differences.append(Difference(name, before, after, message))
    return tuple(differences)


def format_comparison(spec_version: str, reference: SuiteRun, observed: SuiteRun, label: str = "gateway") -> str:
    differences = compare_reports(reference.report, observed.report)
    lines = [
        f"conformance {spec_version}, direct vs {label}: {reference.report.passed}/{reference.report.total} vs "
        f"{observed.report.passed}/{observed.report.total} checks passed; "
        + (f"{len(differences)} checks differ" if differences else "every check has the same outcome")
    ]
    for d in differences:
        lines.append(
            f"  DIFFERS {d.name}: direct {'/'.join(d.reference) or 'absent'}, {label} "
            f"{'/'.join(d.observed) or 'absent'}" + (f": {d.message}" if d.message else "")
        )
    return "\n".join(lines)


def suite_installed() -> bool:
    return NODE.is_file() and SUITE.is_file()


def suite_command(url: str, spec_version: str, out_dir: Path, baseline: Path | None = None) -> list[str]:
    command = [str(NODE), str(SUITE), "server", "--url", url, "--suite", "all", "--spec-version", spec_version]
    command += ["-o", str(out_dir)]
    if baseline is not None and baseline.is_file():
        command += ["--expected-failures", str(baseline)]
    return command


@dataclass(frozen=True)
class SuiteRun:
    spec_version: str
    url: str
    report: Report = field(repr=False)
    returncode: int
    output: str = field(repr=False)
    seconds: float

    @property
    def ok(self) -> bool:
        # The suite exits non-zero on failures its baseline does not excuse, and on stale entries.
        return self.report.ok and self.returncode == 0


def _clear_results(out_dir: Path) -> None:
    """Remove earlier scenario results from ``out_dir`` (and nothing else), so only this run is read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for result_dir in out_dir.iterdir():
        if _RESULT_DIR.match(result_dir.name) and result_dir.is_dir():
            shutil.rmtree(result_dir)


async def run_suite(url: str, spec_version: str, out_dir: Path, *, baseline: Path | None = None) -> SuiteRun:
    """Run the suite at one spec version against ``url``, writing results to ``out_dir``, and judge them."""
    if not suite_installed():
        raise SuiteNotInstalledError()
    command = suite_command(url, spec_version, out_dir, baseline)
    _clear_results(out_dir)
    started = time.monotonic()
    process = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    output = process.stdout.decode(errors="replace")
    (out_dir / "suite-output.txt").write_text(output)
    report = Report(read_checks(out_dir), load_baseline(baseline))
    return SuiteRun(spec_version, url, report, process.returncode, output, seconds)


def gateway_baseline(spec_version: str) -> Path:
    return Path(GATEWAY_BASELINE_TEMPLATE.format(version=spec_version))


async def pinned_allowlist() -> str:
    """GATEWAY_ALLOWLIST with every example tool pinned (`tools_sha256`), as an admin would pin them after review."""
    from examples.everything_server import build_server
    from mcp_gateway.identity.tool_pins import tool_sha256

    tools = await build_server().list_tools()
    pins = {tool.name: tool_sha256(tool.model_dump(by_alias=True, mode="json", exclude_none=True)) for tool in tools}
    lines = "\n".join(f"{json.dumps(name)} = {json.dumps(digest)}" for name, digest in sorted(pins.items()))
    return f"{GATEWAY_ALLOWLIST}\n[servers.everything.tools_sha256]\n{lines}\n"


async def run_suite_through_gateway(spec_version: str, directory: Path, *, pinned: bool = False) -> SuiteRun:
    """Run the suite through a whole gateway stack started in ``directory`` and judge it by the gateway baseline.

    The stack (``tests/_stack.py``) is a fresh example upstream, the dev issuer and the gateway, each on a
    loopback port; the token is a real one the dev issuer minted for the gateway's resource URI, and the
    bearer forwarder adds it to every request the suite sends.
    """
    from tests._stack import gateway_stack  # the whole gateway; only this mode needs it

    allowlist = await pinned_allowlist() if pinned else GATEWAY_ALLOWLIST
    async with gateway_stack(directory, allowlist=allowlist) as stack:
        token = stack.token(GATEWAY_SCOPES)
        async with bearer_forwarder(stack.mcp_url(), token) as url:
            return await run_suite(url, spec_version, directory / "results", baseline=gateway_baseline(spec_version))


def format_run(run: SuiteRun) -> str:
    report = run.report
    lines = [
        f"conformance {run.spec_version} against {run.url}: {report.passed}/{report.total} checks passed, "
        f"{report.failed} failed ({len(report.expected_failures)} expected), {report.warnings} warnings "
        f"[{run.seconds:.1f} s]"
    ]
    for scenario, (passed, failed) in report.scenarios().items():
        lines.append(f"  {'✗' if failed else '✓'} {scenario}: {passed} passed, {failed} failed")
    lines += [f"  FAILED {c.name}: {c.message}" for c in report.unexpected_failures]
    lines += [f"  expected failure {c.name}" for c in report.expected_failures]
    lines += [f"  STALE baseline entry (it passes now; remove it): {e}" for e in report.stale_baseline_entries]
    if report.total == 0:
        lines.append("  NO CHECKS RAN; the suite said:\n" + run.output[-3000:])
    elif run.returncode != 0 and report.ok:
        lines.append(f"  the suite exited {run.returncode}; its output is in suite-output.txt")
    lines.append(f"  verdict: {'PASS' if run.ok else 'FAIL'}")
    return "\n".join(lines)


async def run_versions(
    url: str, versions: Iterable[str], out: Path, baseline_template: str, token: str | None
) -> list[SuiteRun]:
    runs: list[SuiteRun] = []
    for version in versions:
        baseline = Path(baseline_template.format(version=version)) if baseline_template else None
        if token is None:
            runs.append(await run_suite(url, version, out / version, baseline=baseline))
        else:
            async with bearer_forwarder(url, token) as forwarded:
                runs.append(await run_suite(forwarded, version, out / version, baseline=baseline))
        print(format_run(runs[-1]), flush=True)
    return runs


async def compare_with_gateway(versions: Iterable[str], out: Path) -> bool:
    """Each version directly against a fresh example server and through a fresh gateway stack; print both."""
    from tests._servers import run_example_server

    same = True
    for version in versions:
        async with run_example_server() as url:
            direct = await run_suite(
                url, version, out / version / "direct", baseline=Path(BASELINE_TEMPLATE.format(version=version))
            )
        with tempfile.TemporaryDirectory(prefix="mcpgw-conformance-") as directory:
            gateway = await run_suite_through_gateway(version, Path(directory))
            _clear_results(out / version / "gateway")
            for result in (Path(directory) / "results").iterdir():
                shutil.move(str(result), out / version / "gateway" / result.name)
        print(
            format_run(direct), format_run(gateway), format_comparison(version, direct, gateway), sep="\n", flush=True
        )
        same = same and direct.ok and gateway.ok and not compare_reports(direct.report, gateway.report)
    return same


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/conformance", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("url", nargs="?", help="the MCP endpoint to check, e.g. http://127.0.0.1:3001/mcp")
    parser.add_argument(
        "--gateway-stack",
        action="store_true",
        help="start the example upstream, the dev issuer and the gateway on loopback; run directly and through "
        "the gateway and compare per check (no URL)",
    )
    parser.add_argument(
        "--spec-version",
        action="append",
        choices=SPEC_VERSIONS,
        help="spec revision to check at (repeatable; default: all of " + ", ".join(SPEC_VERSIONS) + ")",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default .conformance/)")
    parser.add_argument(
        "--expected-failures",
        default=BASELINE_TEMPLATE,
        help="baseline file; {version} is replaced by the spec version (default: this directory's "
        "expected-failures-{version}.yml); '' for none",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="send every request with this bearer token (through a loopback forwarder)")
    token.add_argument("--token-env", metavar="VAR", help="like --token, reading the token from environment VAR")
    args = parser.parse_args(argv)
    if args.gateway_stack == (args.url is not None):
        parser.error("give either a URL or --gateway-stack")
    if args.gateway_stack:
        try:
            same = anyio.run(compare_with_gateway, args.spec_version or SPEC_VERSIONS, args.out)
        except SuiteNotInstalledError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0 if same else 1

    bearer: str | None = args.token
    if args.token_env:
        bearer = os.environ.get(args.token_env)
        if not bearer:
            parser.error(f"environment variable {args.token_env} is empty or unset")
    try:
        runs = anyio.run(
            run_versions, args.url, args.spec_version or SPEC_VERSIONS, args.out, args.expected_failures, bearer
        )
    except SuiteNotInstalledError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
