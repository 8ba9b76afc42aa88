"""The harness reads the suite's per-scenario results and judges them against a baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harness import (
    Check,
    Difference,
    Report,
    compare_reports,
    main,
    parse_baseline,
    read_checks,
    suite_command,
)


def _write_result(out: Path, scenario: str, timestamp: str, checks: list[dict[str, Any]]) -> None:
    result_dir = out / f"server-{scenario}-{timestamp}"
    result_dir.mkdir()
    (result_dir / "checks.json").write_text(json.dumps(checks))


def test_checks_are_read_per_scenario_in_the_order_the_suite_ran_them(tmp_path: Path) -> None:
    _write_result(tmp_path, "tools-list", "2026-11-28T12-00-00-002Z", [{"id": "tools-list", "status": "SUCCESS"}])
    _write_result(
        tmp_path,
        "server-initialize",
        "2026-11-28T12-00-00-001Z",
        [{"id": "init", "status": "SUCCESS"}, {"id": "version", "status": "FAILURE", "errorMessage": "bad"}],
    )
    (tmp_path / "suite-output.txt").write_text("not a result")

    assert read_checks(tmp_path) == (
        Check("server-initialize", "init", "SUCCESS"),
        Check("server-initialize", "version", "FAILURE", "bad"),
        Check("tools-list", "tools-list", "SUCCESS"),
    )


def test_baseline_entries_come_from_the_server_list_only() -> None:
    text = """
# comment
client:
  - auth/dpop
server:
  - tasks-lifecycle  # the SDK has no tasks extension
  - "server-stateless:sep-2575-server-implements-discover"
"""
    assert parse_baseline(text) == {"tasks-lifecycle", "server-stateless:sep-2575-server-implements-discover"}
    assert parse_baseline("server: []\n") == frozenset()


def test_a_baseline_key_with_an_inline_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected a list"):
        parse_baseline("server: tasks-lifecycle\n")


def test_a_failure_outside_the_baseline_fails_the_run() -> None:
    report = Report((Check("a", "x", "SUCCESS"), Check("b", "y", "FAILURE", "boom")))
    assert not report.ok
    assert [c.name for c in report.unexpected_failures] == ["b:y"]
    assert (report.passed, report.failed, report.total) == (1, 1, 2)


def test_failures_named_by_scenario_or_by_check_are_excused() -> None:
    checks = (Check("a", "x", "FAILURE"), Check("b", "y", "FAILURE"), Check("b", "z", "SUCCESS"))
    report = Report(checks, frozenset({"a", "b:y"}))
    assert report.ok
    assert [c.name for c in report.expected_failures] == ["a:x", "b:y"]


def test_a_baseline_entry_that_passes_now_is_stale() -> None:
    report = Report((Check("a", "x", "SUCCESS"),), frozenset({"a:x"}))
    assert report.stale_baseline_entries == ("a:x",)
    assert not report.ok


def test_a_run_with_no_checks_is_not_a_pass() -> None:
    assert not Report(()).ok
    assert not Report((Check("a", "x", "WARNING"),)).ok


def test_the_suite_gets_the_baseline_only_when_the_file_exists(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    present = tmp_path / "present.yml"
    present.write_text("server: []\n")
    without = suite_command("http://127.0.0.1:1/mcp", "2026-07-28", tmp_path, missing)
    with_file = suite_command("http://127.0.0.1:1/mcp", "2026-07-28", tmp_path, present)
    assert "--expected-failures" not in without
    assert with_file[-2:] == ["--expected-failures", str(present)]
    assert without[2:] == ["server", "--url", "http://127.0.0.1:1/mcp", "--suite", "all", "--spec-version",
                           "2026-07-28", "-o", str(tmp_path)]  # fmt: skip


def test_runs_are_compared_per_check_and_info_lines_do_not_count() -> None:
    direct = Report(
        (
            Check("polling", "priming", "SUCCESS"),
            Check("polling", "event", "INFO"),
            Check("polling", "event", "INFO"),
            Check("stateless", "meta-400", "SUCCESS"),
            Check("stateless", "meta-400", "SUCCESS"),
            Check("stateless", "not-found-404", "SUCCESS"),
        )
    )
    gateway = Report(
        (
            Check("polling", "priming", "WARNING", "no priming event"),
            Check("polling", "event", "INFO"),
            Check("stateless", "meta-400", "SUCCESS"),
            Check("stateless", "meta-400", "FAILURE", "got 200"),
            Check("stateless", "extra", "SUCCESS"),
        )
    )
    assert compare_reports(direct, gateway) == (
        Difference("polling:priming", ("SUCCESS",), ("WARNING",), "no priming event"),
        Difference("stateless:extra", (), ("SUCCESS",), ""),
        Difference("stateless:meta-400", ("SUCCESS", "SUCCESS"), ("FAILURE", "SUCCESS"), "got 200"),
        Difference("stateless:not-found-404", ("SUCCESS",), (), ""),
    )
    assert compare_reports(direct, direct) == ()


def test_a_difference_the_baseline_names_is_excused() -> None:
    direct = Report((Check("tasks-lifecycle", "create", "SUCCESS"), Check("ping", "ping", "SUCCESS")))
    gateway_checks = (Check("tasks-lifecycle", "create", "FAILURE"), Check("ping", "ping", "FAILURE"))
    by_scenario = Report(gateway_checks, frozenset({"tasks-lifecycle"}))
    by_check = Report(gateway_checks, frozenset({"tasks-lifecycle:create", "ping:ping"}))
    assert [d.name for d in compare_reports(direct, by_scenario)] == ["ping:ping"]
    assert compare_reports(direct, by_check) == ()


def test_the_command_line_takes_a_url_or_the_gateway_stack_but_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["http://127.0.0.1:1/mcp", "--gateway-stack"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "give either a URL or --gateway-stack" in capsys.readouterr().err


def test_a_checks_details_are_kept_for_assertions_but_not_compared(tmp_path: Path) -> None:
    details = {"hostHeader": "evil.example.com", "statusCode": 421}
    checks = [{"id": "rejected", "status": "SUCCESS", "details": details}]
    _write_result(tmp_path, "dns-rebinding-protection", "2026-11-28T12-00-00-001Z", checks)
    (check,) = read_checks(tmp_path)
    assert check.details == details
    assert check == Check("dns-rebinding-protection", "rejected", "SUCCESS")
