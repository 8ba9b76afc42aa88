"""A real gateway with `[audit] url = "postgresql://…"`: a tool call's intent and outcome land in PostgreSQL and
`audit query --config` prints them; a database refusing writes gets 503 and nothing forwarded, and the gateway
heals by itself."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.audit.postgres import PostgresAuditSink
from tests._stack import gateway_stack
from tests.e2e._audit_support import call_tool, run_cli

from ._pg import execute, fetch

pytestmark = pytest.mark.anyio

REFUSE_WRITES = "ALTER TABLE audit_records ADD CONSTRAINT refuse_writes CHECK (false) NOT VALID"


async def test_a_tool_call_is_audited_in_postgresql_and_read_back_by_the_cli(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with gateway_stack(tmp_path, audit_config=f'url = "{pg_url}"\n') as stack:
        sink = stack.app.audit
        assert isinstance(sink, PostgresAuditSink)
        token = stack.token(["tools:read"])
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(timeout=10) as http:
                ok = await call_tool(http, stack.mcp_url(), token, "echo", {"message": "hi"}, reason="first")
                assert ok.status_code == 200
                intent = await fetch(pg_url, "SELECT phase, chain_id FROM audit_records WHERE phase = 'intent'")
                assert intent == [("intent", sink.chain_id)]  # durable before the answer came back
                assert (await http.get(f"{stack.base_url}/readyz")).status_code == 200
                metrics = (await http.get(f"{stack.base_url}/metrics")).text
                assert "mcp_gateway_audit_healthy 1.0" in metrics

                # The database refuses writes: the next call is refused with 503, and not forwarded.
                forwarded = len(stack.tap.calls("tools/call"))
                await sink.flush()  # the first call's outcome, before the store starts refusing
                await execute(pg_url, REFUSE_WRITES)
                refused = await call_tool(http, stack.mcp_url(), token, "echo", {"message": "lost"}, reason="second")
                assert refused.status_code == 503
                assert len(stack.tap.calls("tools/call")) == forwarded
                assert (await http.get(f"{stack.base_url}/readyz")).status_code == 503
                assert "mcp_gateway_audit_healthy 0.0" in (await http.get(f"{stack.base_url}/metrics")).text

                # Nobody restarts anything: once the database accepts writes, the next call goes through.
                await execute(pg_url, "ALTER TABLE audit_records DROP CONSTRAINT refuse_writes")
                healed = await call_tool(http, stack.mcp_url(), token, "echo", {"message": "back"}, reason="third")
                assert healed.status_code == 200
                assert (await http.get(f"{stack.base_url}/readyz")).status_code == 200

                # The database ends the gateway's connection between calls: the next call does not notice.
                pid = sink.backend_pid
                await execute(pg_url, "SELECT pg_terminate_backend($1, 5000)", pid)
                while sink.backend_pid == pid:  # the driver sees it (and a queued outcome may reconnect)
                    await anyio.sleep(0.02)
                again = await call_tool(http, stack.mcp_url(), token, "echo", {"message": "on"}, reason="fourth")
                assert again.status_code == 200 and sink.backend_pid not in (None, pid)
    config = str(tmp_path / "gateway.toml")
    code, out = run_cli(capsys, "audit", "query", "--config", config, "--format", "json", "--tool", "echo")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    calls = [(r["request_context"], r["outcome"], r["http_status"]) for r in rows]
    # The refused call left no intent; its refusal was written once the store took writes again.
    assert calls == [("first", "ok", 200), ("second", "denied", 503), ("third", "ok", 200), ("fourth", "ok", 200)]
    assert {r["chain_id"] for r in rows} == {sink.chain_id}
    assert run_cli(capsys, "audit", "verify", "--config", config)[0] == 0
