"""Calls allowed and refused through a real gateway, then `mcp-gateway audit query` finds each with every
contract field right (agent, user, server, tool, decision, scopes, TTL, token id, reason, digest)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import RequestParamsMeta

from tests._stack import Stack, gateway_stack
from tests.e2e._audit_support import CONTRACT_FIELDS, call, call_tool, digest, json_rows, run_cli, run_cli_process

pytestmark = pytest.mark.anyio

# No default_scopes: a tool without its own rule is denied.
ALLOWLIST = """
[servers.everything.tool_scopes]
echo = ["tools:read"]
delete_everything = ["admin"]
test_error_handling = ["tools:read"]

[servers.everything.resource_scopes]
"test://static-" = ["resources:read"]

[servers.everything.prompt_scopes]
test_prompt_with_arguments = ["prompts:read"]
"""
TOKEN_LIFETIME = 600  # tests/_stack.py's issuer
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@dataclass
class Traffic:
    """What the test sent, and what it expects the audit log to say about each call."""

    stack: Stack
    started: float
    finished: float
    tokens: dict[str, str]  # name → raw token
    legacy_sessions: set[str]
    expected: list[dict[str, Any]]


def stated(reason: str) -> RequestParamsMeta:
    """`params._meta` carrying the agent's stated reason for a call."""
    return RequestParamsMeta(request_context=reason)  # type: ignore[typeddict-unknown-key]


def jti(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return str(claims["jti"])


def expect(
    tool: str,
    arguments: dict[str, Any] | None,
    *,
    token: str | None,
    scopes: list[str],
    required: list[str],
    reason: str | None,
    decision: str,
    rule: str | None,
    outcome: str,
    status: int,
    legacy: bool = False,
    method: str = "tools/call",
) -> dict[str, Any]:
    authenticated = token is not None
    return {
        "agent_id": "agent-a" if authenticated else None,
        "delegating_user": "user-of-agent-a" if authenticated else None,
        "mcp_server": "everything",
        "method": method,
        "tool": tool,
        "scope_granted": sorted(scopes),
        "scopes_required": required,
        "token_id": jti(token) if token is not None else None,
        "request_context": reason,
        "decision": decision,
        "policy_rule": rule,
        "outcome": outcome,
        "http_status": status,
        "arguments_sha256": None if arguments is None else digest(arguments),
        "_legacy": legacy,
    }


@pytest.fixture(scope="module")
async def traffic(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Traffic]:
    """One gateway run: an allowed call in each era, a step-up round trip, no token, a denied tool, a tool error.

    The stack is shut down (so every outcome record is flushed) before the test reads the log.
    """
    tmp_path = tmp_path_factory.mktemp("traffic")
    started = time.time()
    expected: list[dict[str, Any]] = []
    sessions: set[str] = set()
    async with gateway_stack(tmp_path, allowlist=ALLOWLIST) as stack:
        read = stack.token(["tools:read"])
        admin = stack.token(["tools:read", "admin"])
        url = stack.mcp_url()

        async def remember_session(request: httpx2.Request) -> None:
            if "mcp-session-id" in request.headers:
                sessions.add(request.headers["mcp-session-id"])

        with anyio.fail_after(30):
            # 1. Handshake era, through the SDK's own client: an allowed call with a stated reason.
            async with httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {read}"}, timeout=30, event_hooks={"request": [remember_session]}
            ) as http:
                transport = streamable_http_client(url, http_client=http)
                async with Client(transport, mode="legacy") as client:
                    result = await client.call_tool("echo", {"message": "hello"}, meta=stated("greet the user"))
            assert result.content[0].text == "hello"  # type: ignore[union-attr]
            expected.append(
                expect(
                    "echo",
                    {"message": "hello"},
                    token=read,
                    scopes=["tools:read"],
                    required=["tools:read"],
                    reason="greet the user",
                    decision="allow",
                    rule="tool_scopes.echo",
                    outcome="ok",
                    status=200,
                    legacy=True,
                )
            )
            async with httpx2.AsyncClient(timeout=30) as http:
                # 2. Stateless era: an allowed call with a reason.
                arguments = {"message": "héllo wörld", "n": 1.5e3}
                response = await call_tool(http, url, read, "echo", arguments, reason="echo back")
                assert response.status_code == 200, response.text
                expected.append(
                    expect(
                        "echo",
                        arguments,
                        token=read,
                        scopes=["tools:read"],
                        required=["tools:read"],
                        reason="echo back",
                        decision="allow",
                        rule="tool_scopes.echo",
                        outcome="ok",
                        status=200,
                    )
                )
                # 3. Step-up round trip: refused with 403 for lack of `admin`, then retried with it.
                refused = await call_tool(http, url, read, "delete_everything", {}, reason="clean up the demo")
                assert refused.status_code == 403
                assert 'scope="admin"' in refused.headers["www-authenticate"]
                retried = await call_tool(http, url, admin, "delete_everything", {}, reason="clean up the demo")
                assert retried.status_code == 200, retried.text
                for token, scopes, decision, outcome, status in (
                    (read, ["tools:read"], "step_up", "denied", 403),
                    (admin, ["tools:read", "admin"], "allow", "ok", 200),
                ):
                    expected.append(
                        expect(
                            "delete_everything",
                            {},
                            token=token,
                            scopes=scopes,
                            required=["admin"],
                            reason="clean up the demo",
                            decision=decision,
                            rule="tool_scopes.delete_everything",
                            outcome=outcome,
                            status=status,
                        )
                    )
                # 3b. A resource and a prompt are audited like tools: the URI or prompt name is the target.
                reader = stack.token(["resources:read", "prompts:read"])
                resource = await call(
                    http, url, reader, "resources/read", {"uri": "test://static-text"}, reason="read the notes"
                )
                assert resource.status_code == 200, resource.text
                prompt_params = {"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}
                prompt = await call(http, url, reader, "prompts/get", prompt_params, reason="draft a reply")
                assert prompt.status_code == 200, prompt.text
                for method, target, required, rule, why in (
                    (
                        "resources/read",
                        "test://static-text",
                        "resources:read",
                        "resource_scopes[test://static-]",
                        "read the notes",
                    ),
                    (
                        "prompts/get",
                        "test_prompt_with_arguments",
                        "prompts:read",
                        "prompt_scopes.test_prompt_with_arguments",
                        "draft a reply",
                    ),
                ):
                    expected.append(
                        expect(
                            target,
                            None,  # the contract digests tool-call arguments only
                            token=reader,
                            scopes=["resources:read", "prompts:read"],
                            required=[required],
                            reason=why,
                            decision="allow",
                            rule=rule,
                            outcome="ok",
                            status=200,
                            method=method,
                        )
                    )
                # 4. No token at all: 401, never forwarded.
                anonymous = await call_tool(http, url, None, "echo", {"message": "who am i"}, reason="anonymous")
                assert anonymous.status_code == 401
                expected.append(
                    expect(
                        "echo",
                        {"message": "who am i"},
                        token=None,
                        scopes=[],
                        required=[],  # no policy ran: nobody was authenticated
                        reason="anonymous",
                        decision="deny",
                        rule=None,
                        outcome="denied",
                        status=401,
                    )
                )
                # 5. A tool with no rule (and no default_scopes): denied as a JSON-RPC error.
                denied = await call_tool(http, url, admin, "emit_progress", {"steps": 2}, reason="show progress")
                assert denied.status_code == 200
                assert denied.json()["error"]["message"] == "Tool 'emit_progress' is not permitted"
                expected.append(
                    expect(
                        "emit_progress",
                        {"steps": 2},
                        token=admin,
                        scopes=["tools:read", "admin"],
                        required=[],
                        reason="show progress",
                        decision="deny",
                        rule="no_rule",
                        outcome="denied",
                        status=200,
                    )
                )
                # 6. An allowed call whose tool fails: the outcome says so.
                failed = await call_tool(http, url, read, "test_error_handling", {}, reason=None)
                assert failed.json()["result"]["isError"] is True
                expected.append(
                    expect(
                        "test_error_handling",
                        {},
                        token=read,
                        scopes=["tools:read"],
                        required=["tools:read"],
                        reason=None,
                        decision="allow",
                        rule="tool_scopes.test_error_handling",
                        outcome="tool_error",
                        status=200,
                    )
                )
    tokens = {"read": read, "admin": admin, "reader": reader}
    yield Traffic(stack, started, time.time(), tokens, sessions, expected)


def query(capsys: pytest.CaptureFixture[str], traffic: Traffic, *options: str) -> list[dict[str, Any]]:
    code, out = run_cli(capsys, "audit", "query", "--config", str(traffic.stack.directory / "gateway.toml"), *options)
    assert code == 0
    return json_rows(out)


async def test_audit_query_finds_every_allowed_and_refused_call_with_every_contract_field_right(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = query(capsys, traffic, "--format", "json")
    assert [row["tool"] for row in rows] == [e["tool"] for e in traffic.expected]
    allowlist_sha256 = hashlib.sha256((traffic.stack.directory / "server_allowlist.toml").read_bytes()).hexdigest()
    for row, expected in zip(rows, traffic.expected, strict=True):
        assert list(row)[: len(CONTRACT_FIELDS)] == list(CONTRACT_FIELDS)
        legacy = expected["_legacy"]
        assert {name: row[name] for name in expected if name != "_legacy"} == {
            name: value for name, value in expected.items() if name != "_legacy"
        }
        assert UUID.fullmatch(row["event_id"])
        moment = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).timestamp()
        assert row["timestamp"].endswith("Z") and len(row["timestamp"]) == len("2026-01-01T00:00:00.000Z")
        assert traffic.started - 0.001 <= moment <= traffic.finished
        if expected["token_id"] is None:
            assert row["token_ttl"] is None
        else:
            # Seconds left when the call was made: positive, at most the lifetime, minus what has passed.
            assert TOKEN_LIFETIME - (traffic.finished - traffic.started) - 2 <= row["token_ttl"] <= TOKEN_LIFETIME
        if legacy:
            assert row["session_id"] in traffic.legacy_sessions
        else:
            assert row["session_id"] is None
        assert isinstance(row["latency_ms"], float) and row["latency_ms"] >= 0
        assert row["policy_version"] == allowlist_sha256
        assert row["client_address"] == "127.0.0.1"
        assert row["upstream_identity"] == traffic.stack.upstream_url
    assert len({row["event_id"] for row in rows}) == len(rows)
    # Only what the policy allowed reached the upstream; the stepped-up retry exactly once.
    forwarded = [call["params"]["name"] for call in traffic.stack.tap.calls("tools/call")]
    assert forwarded == ["echo", "echo", "delete_everything", "test_error_handling"]
    assert [c["params"]["uri"] for c in traffic.stack.tap.calls("resources/read")] == ["test://static-text"]
    assert [c["params"]["name"] for c in traffic.stack.tap.calls("prompts/get")] == ["test_prompt_with_arguments"]


async def test_no_audit_record_holds_a_raw_token(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    exported = run_cli(capsys, "audit", "export", "--config", str(traffic.stack.directory / "gateway.toml"))[1]
    assert len(json_rows(exported)) >= len(traffic.expected)
    database = (traffic.stack.directory / "audit.db").read_bytes()
    for token in traffic.tokens.values():
        assert token not in exported
        assert token.encode() not in database
        # Not even the signature alone.
        assert token.rsplit(".", 1)[1] not in exported


async def test_step_up_refusal_and_its_retry_are_both_found_and_correlate(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = query(capsys, traffic, "--format", "json", "--agent", "agent-a", "--tool", "delete_everything")
    assert [(row["decision"], row["http_status"]) for row in rows] == [("step_up", 403), ("allow", 200)]
    refused, retried = rows
    # Same agent, user, server, tool, stated reason and arguments; a later time and a stepped-up token.
    same = ("agent_id", "delegating_user", "mcp_server", "tool", "request_context", "arguments_sha256")
    assert {name: refused[name] for name in same} == {name: retried[name] for name in same}
    assert refused["timestamp"] <= retried["timestamp"]
    assert refused["token_id"] == jti(traffic.tokens["read"])
    assert retried["token_id"] == jti(traffic.tokens["admin"])
    assert "admin" not in refused["scope_granted"] and "admin" in retried["scope_granted"]
    assert [r["event_id"] for r in query(capsys, traffic, "--format", "json", "--decision", "step_up")] == [
        refused["event_id"]
    ]


async def test_step_up_in_a_session_keeps_the_session_id_on_both_attempts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[str] = []

    async def remember_session(request: httpx2.Request) -> None:
        if request.headers.get("mcp-session-id"):
            sent.append(request.headers["mcp-session-id"])

    async with gateway_stack(tmp_path, allowlist=ALLOWLIST) as stack:
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {stack.token(['tools:read'])}"},
                timeout=30,
                event_hooks={"request": [remember_session]},
            ) as http:
                transport = streamable_http_client(stack.mcp_url(), http_client=http)
                async with Client(transport, mode="legacy") as client:
                    with pytest.raises(MCPError):
                        await client.call_tool("delete_everything", {}, meta=stated("tidy up"))
                    # Step up in place: the session is bound to the principal, not to the token's scopes.
                    http.headers["Authorization"] = f"Bearer {stack.token(['tools:read', 'admin'])}"
                    await client.call_tool("delete_everything", {}, meta=stated("tidy up"))
    code, out = run_cli(capsys, "audit", "query", "--config", str(stack.directory / "gateway.toml"), "--format", "json")
    assert code == 0
    rows = [row for row in json_rows(out) if row["tool"] == "delete_everything"]
    assert [row["decision"] for row in rows] == ["step_up", "allow"]
    assert rows[0]["session_id"] is not None
    assert rows[0]["session_id"] == rows[1]["session_id"] == sent[-1]
    assert [call["params"]["name"] for call in stack.tap.calls("tools/call")] == ["delete_everything"]


async def test_audit_query_as_a_real_process_prints_the_same_rows(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(traffic.stack.directory / "gateway.toml")
    in_process = query(capsys, traffic, "--format", "json")
    done = await run_cli_process("audit", "query", "--config", config, "--format", "json")
    assert done.returncode == 0, done.stderr.decode()
    assert json_rows(done.stdout.decode("ascii")) == in_process
    assert len(in_process) == len(traffic.expected)


async def test_table_and_csv_formats_print_the_same_rows(
    traffic: Traffic, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(traffic.stack.directory / "gateway.toml")
    rows = query(capsys, traffic, "--format", "json")

    code, out = run_cli(capsys, "audit", "query", "--config", config, "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["event_id"] for r in table] == [r["event_id"] for r in rows]
    for parsed, row in zip(table, rows, strict=True):
        assert parsed["agent_id"] == (row["agent_id"] or "")
        assert parsed["tool"] == row["tool"]
        assert parsed["decision"] == row["decision"]
        assert parsed["scope_granted"] == " ".join(row["scope_granted"])
        assert parsed["token_ttl"] == ("" if row["token_ttl"] is None else str(row["token_ttl"]))
        assert parsed["arguments_sha256"] == (row["arguments_sha256"] or "")
        assert parsed["request_context"] == (row["request_context"] or "")

    monkeypatch.setenv("COLUMNS", "100")
    code, out = run_cli(capsys, "audit", "query", "--config", config, "--format", "table")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["TIME", "AGENT", "USER"]
    assert len(lines) == len(rows)
    assert all(len(line) <= 100 for line in [header, *lines])
    for line, row in zip(lines, rows, strict=True):
        assert row["timestamp"] in line
        assert row["decision"] in line
        assert row["outcome"] in line
        assert str(row["http_status"]) in line
