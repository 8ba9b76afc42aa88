"""Unauthenticated refusals: a flood is folded into a few records whose counts add up; a token that did
not verify is named by its hash, never its value."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sqlite import SQLiteAuditSink
from tests._stack import gateway_stack
from tests.e2e._audit_support import call_tool, json_rows, run_cli

pytestmark = pytest.mark.anyio

FLOOD = 200
ATTACKERS = 20  # concurrent connections


async def test_an_unauthenticated_flood_leaves_few_records_whose_counts_add_up_after_the_final_flush(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses: list[int] = []
    async with gateway_stack(tmp_path) as stack:
        config = str(stack.directory / "gateway.toml")
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(timeout=10) as http:

                async def attacker(first: int) -> None:
                    for i in range(first, FLOOD, ATTACKERS):
                        response = await call_tool(http, stack.mcp_url(), None, "echo", {"message": f"flood-{i}"})
                        statuses.append(response.status_code)

                async with anyio.create_task_group() as tg:
                    for first in range(ATTACKERS):
                        tg.start_soon(attacker, first)
            sink = stack.app.audit
            assert isinstance(sink, SQLiteAuditSink)
            await sink.flush()
        # While the window is open, only the refusal that opened it is written.
        during = json_rows(run_cli(capsys, "audit", "query", "--config", config, "--format", "json")[1])
    after = json_rows(run_cli(capsys, "audit", "query", "--config", config, "--format", "json")[1])

    assert statuses == [401] * FLOOD
    assert stack.tap.requests == []
    assert [row["event_type"] for row in during] == ["refusal"]
    # Shutting down closes the window: one summary with the count of the refusals it stood for.
    assert len(after) <= 5, "a flood must not become one record per request"
    full = [row for row in after if row["event_type"] == "refusal"]
    summaries = [row for row in after if row["event_type"] == "unauthenticated_summary"]
    assert len(full) + len(summaries) == len(after)
    assert full == during
    details = [json.loads(row["detail"]) for row in summaries]
    assert len(full) + sum(detail["count"] for detail in details) == FLOOD
    opener = full[0]
    assert (opener["http_status"], opener["outcome"], opener["agent_id"], opener["tool"]) == (
        401,
        "denied",
        None,
        "echo",
    )
    for row, detail in zip(summaries, details, strict=True):
        assert (row["mcp_server"], row["http_status"], row["outcome"]) == ("everything", 401, "denied")
        assert row["client_address"] == "127.0.0.1"
        assert detail["first_event_id"] == opener["event_id"]
        assert detail["window_start"] <= detail["window_end"] == row["timestamp"]
    assert run_cli(capsys, "audit", "verify", "--config", config)[0] == 0


def _forged(token: str) -> str:
    """`token` with one byte of its signature flipped: well-formed, signed by nobody."""
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


async def test_a_token_that_does_not_verify_is_recorded_by_its_hash_and_apart_from_missing_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with gateway_stack(tmp_path) as stack:
        forged = _forged(stack.token(["tools:read"]))
        with anyio.fail_after(20):
            async with httpx2.AsyncClient(timeout=10) as http:
                invalid = await call_tool(http, stack.mcp_url(), forged, "echo", {"message": "forged"})
                missing = await call_tool(http, stack.mcp_url(), None, "echo", {"message": "none"})
        config = str(stack.directory / "gateway.toml")
    assert (invalid.status_code, missing.status_code) == (401, 401)
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"]
    rows = json_rows(run_cli(capsys, "audit", "query", "--config", config, "--format", "json")[1])
    # SECURITY.md: one record per refusal at an MCP endpoint, naming the token by its jti or hash. A
    # missing token and a forged one are different stories, so one must not be folded into the other.
    assert [row["event_type"] for row in rows] == ["refusal", "refusal"]
    assert rows[0]["token_id"] == "sha256:" + hashlib.sha256(forged.encode()).hexdigest()
    assert rows[1]["token_id"] is None
    assert json.loads(rows[0]["detail"])["error"] == "invalid_token"
    exported = run_cli(capsys, "audit", "export", "--config", config)[1]
    assert forged not in exported and forged.rsplit(".", 1)[1] not in exported
