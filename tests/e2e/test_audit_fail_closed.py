"""An audit store that cannot write: calls are refused with 503, nothing reaches the upstream, not ready."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sink import FailingAuditSink
from mcp_gateway.audit.sqlite import SQLiteAuditSink
from tests._mcp import modern_headers
from tests._stack import gateway_stack
from tests.e2e._audit_support import call_body, call_tool, digest, json_rows, run_cli, wait_ready

pytestmark = pytest.mark.anyio

UNAVAILABLE = "Service Unavailable: the audit log cannot record this call; nothing was forwarded"


def assert_refused_for_audit(response: httpx2.Response, *secrets: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"]["message"] == UNAVAILABLE
    for secret in ("sqlite", "disk", "full", "audit.db", "unavailable", *secrets):
        assert secret not in response.text.lower().replace("service unavailable", "")


async def readiness(http: httpx2.AsyncClient, base_url: str) -> tuple[int, dict[str, Any]]:
    response = await http.get(f"{base_url}/readyz")
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "echo", "arguments": {"message": "must not arrive"}}),
        ("resources/read", {"uri": "file:///public/readme.txt"}),
        ("prompts/get", {"name": "summarize", "arguments": {"text": "must not arrive"}}),
    ],
)
async def test_a_failing_audit_sink_refuses_audited_calls_with_503_and_forwards_nothing(
    tmp_path: Path, method: str, params: dict[str, Any]
) -> None:
    sink = FailingAuditSink("disk I/O error at /var/lib/secret/audit.db")
    async with gateway_stack(tmp_path, audit=sink) as stack:
        token = stack.token(["tools:read", "resources:read", "prompts:read"])
        with anyio.fail_after(20):
            async with httpx2.AsyncClient(timeout=10) as http:
                name = params.get("name") or params.get("uri")
                response = await http.post(
                    stack.mcp_url(), json=call_body(method, params), headers=modern_headers(token, method, name)
                )
                status, ready = await readiness(http, stack.base_url)
    assert_refused_for_audit(response, "/var/lib/secret", "i/o error")
    assert sink.attempts == 1
    assert stack.tap.calls(method) == []
    assert status == 503
    assert ready["ready"] is False and ready["checks"]["audit"] is False


async def test_an_sqlite_store_that_fills_up_mid_run_refuses_calls_from_then_on_and_forwards_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def disk_of_fixed_size(conn: sqlite3.Connection) -> None:
        # A full disk, simulated: the file may not grow past the pages it has now. A few records still fit
        # in them; then every write fails with SQLITE_FULL.
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    sink = SQLiteAuditSink(tmp_path / "audit.db", on_open=disk_of_fixed_size)
    statuses: list[int] = []
    async with gateway_stack(tmp_path, audit=sink) as stack:
        token = stack.token(["tools:read"])
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(timeout=10) as http:
                assert (await readiness(http, stack.base_url))[0] == 200
                for i in range(60):
                    # Same-sized arguments, so that once one record does not fit, none does.
                    response = await call_tool(http, stack.mcp_url(), token, "echo", {"message": f"call-{i:04d}"})
                    statuses.append(response.status_code)
                    if response.status_code == 503:
                        assert_refused_for_audit(response)
                        if statuses.count(503) == 5:
                            break
                status, ready = await readiness(http, stack.base_url)
    allowed = statuses.index(503)
    assert allowed >= 1, "the store was full from the start, not mid-run"
    assert statuses == [200] * allowed + [503] * 5
    forwarded = [call["params"]["arguments"]["message"] for call in stack.tap.calls("tools/call")]
    assert forwarded == [f"call-{i:04d}" for i in range(allowed)]
    assert status == 503 and ready["checks"]["audit"] is False
    # What was written before the disk filled up is intact, and every call that went through is in it.
    code, out = run_cli(capsys, "audit", "verify", "--config", str(stack.directory / "gateway.toml"))
    assert code == 0, out
    code, out = run_cli(capsys, "audit", "query", "--config", str(stack.directory / "gateway.toml"), "--format", "json")
    # A refusal's own small record may still fit where an intent did not; count the calls that went through.
    intents = [row for row in json_rows(out) if row["method"] == "tools/call" and row["http_status"] != 503]
    assert len(intents) == allowed


async def test_a_store_made_read_only_mid_run_fails_closed_and_becomes_ready_again_without_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    connections: list[sqlite3.Connection] = []
    sink = SQLiteAuditSink(tmp_path / "audit.db", on_open=connections.append, recovery_probe_seconds=0.05)
    async with gateway_stack(tmp_path, audit=sink) as stack:
        token = stack.token(["tools:read"])
        url = stack.mcp_url()
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(timeout=10) as http:
                assert (await call_tool(http, url, token, "echo", {"message": "before"})).status_code == 200
                await sink.flush()  # the writer is idle: nothing races the switch below
                connections[0].execute("PRAGMA query_only = ON")  # as if the file had become read-only
                refused = [await call_tool(http, url, token, "echo", {"message": f"refused-{i}"}) for i in range(3)]
                status, ready = await readiness(http, stack.base_url)
                await sink.flush()  # every refusal's own record has met the read-only store before it heals
                connections[0].execute("PRAGMA query_only = OFF")
                # A not-ready gateway gets no traffic behind a load balancer: it must find out by itself
                # that the store can write again, or it stays out of rotation for good.
                await wait_ready(stack.base_url, timeout=10)
                after = await call_tool(http, url, token, "echo", {"message": "after"})
    for response in refused:
        assert_refused_for_audit(response, "readonly", "read-only")
    assert (status, ready["checks"]["audit"]) == (503, False)
    assert after.status_code == 200
    assert [call["params"]["arguments"]["message"] for call in stack.tap.calls("tools/call")] == ["before", "after"]
    config = str(stack.directory / "gateway.toml")
    assert run_cli(capsys, "audit", "verify", "--config", config)[0] == 0
    rows = json_rows(run_cli(capsys, "audit", "query", "--config", config, "--format", "json")[1])
    # Refusals made while the store was read-only may or may not have reached it; the calls that went
    # through must all be there.
    calls = [row for row in rows if row["method"] == "tools/call" and row["http_status"] != 503]
    assert [(row["arguments_sha256"], row["outcome"]) for row in calls] == [
        (digest({"message": "before"}), "ok"),
        (digest({"message": "after"}), "ok"),
    ]
    # The log itself says that it could not be written for a while, and how much was lost meanwhile.
    recovered = [row for row in rows if row["event_type"] == "audit_store_recovered"]
    assert len(recovered) == 1
    detail = json.loads(recovered[0]["detail"])
    assert detail["failed_batches"] >= 3
    # The refusals' own event records: each was either lost in the outage or written once it ended.
    written_refusals = [row for row in rows if row["method"] == "tools/call" and row["http_status"] == 503]
    assert detail["records_lost"] + len(written_refusals) >= 3
    assert recovered[0]["timestamp"] >= detail["unavailable_since"]
