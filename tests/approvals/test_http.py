"""The approvers' HTTP surface and CLI: who may use them, what every answer carries, shutdown."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.cli import main as gateway_cli
from tests.approvals._support import (
    APPROVER_SCOPE,
    approval_stack,
    approvals_url,
    approver_token,
    wait_none_pending,
    wait_pending,
)
from tests.e2e._audit_support import call_tool

pytestmark = pytest.mark.anyio


def _assert_locked_down(response: httpx2.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


async def test_the_approvals_api_wants_a_token_for_its_own_resource(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient() as http:
        url = approvals_url(stack)
        anonymous = await http.get(url)
        assert anonymous.status_code == 401
        _assert_locked_down(anonymous)
        challenge = anonymous.headers["www-authenticate"]
        metadata_url = re.search(r'resource_metadata="([^"]+)"', challenge)
        assert metadata_url is not None and APPROVER_SCOPE in challenge
        metadata = (await http.get(metadata_url.group(1))).json()
        assert metadata["resource"] == url  # RFC 9728 §3.3
        assert set(metadata["scopes_supported"]) == {APPROVER_SCOPE, "audit:read"}
        # A token for an MCP route (RFC 8707 audience) does not open the approvals API.
        mcp_token = stack.token([APPROVER_SCOPE], client="approver")
        wrong_audience = await http.get(url, headers={"authorization": f"Bearer {mcp_token}"})
        assert (
            wrong_audience.status_code == 401 and 'error="invalid_token"' in wrong_audience.headers["www-authenticate"]
        )
        # And an approvals token does not open an MCP route.
        response = await call_tool(http, stack.mcp_url(), approver_token(stack), "echo", {"message": "x"})
        assert response.status_code == 401


async def test_listing_needs_an_approver_scope_and_reading_the_audit_log_needs_audit_read(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient() as http:
        auditor = approver_token(stack, client="auditor", scopes=["audit:read"])
        approver = approver_token(stack)
        listed = await http.get(approvals_url(stack), headers={"authorization": f"Bearer {auditor}"})
        assert listed.status_code == 403 and f'scope="{APPROVER_SCOPE}"' in listed.headers["www-authenticate"]
        records = f"{stack.base_url}/audit/records"
        refused = await http.get(records, headers={"authorization": f"Bearer {approver}"})
        assert refused.status_code == 403 and 'scope="audit:read"' in refused.headers["www-authenticate"]
        await call_tool(http, stack.mcp_url(), stack.token(), "show_request_headers", {})
        await stack.app.audit.flush()
        read = await http.get(
            records, params={"tool": "show_request_headers"}, headers={"authorization": f"Bearer {auditor}"}
        )
        _assert_locked_down(read)
        assert [r["tool"] for r in read.json()["records"]] == ["show_request_headers"]
        verified = await http.get(f"{stack.base_url}/audit/verify", headers={"authorization": f"Bearer {auditor}"})
        assert verified.json()["ok"] is True and verified.json()["records"] >= 2
        bad = await http.get(records, params={"since": "yesterday"}, headers={"authorization": f"Bearer {auditor}"})
        assert bad.status_code == 400


async def test_the_console_is_static_html_whose_only_script_is_a_file_of_its_own(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient() as http:
        page = await http.get(f"{stack.base_url}/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        _assert_locked_down(page)
        scripts = re.findall(r"<script[^>]*>(.*?)</script>", page.text, re.S)
        assert scripts == [""]  # one script element, empty: its code comes from src
        assert 'src="/console/console.js"' in page.text and "style=" not in page.text
        script = await http.get(f"{stack.base_url}/console/console.js")
        _assert_locked_down(script)
        assert "innerHTML" not in script.text and "textContent" in script.text
        assert not re.search(r"localStorage|sessionStorage|indexedDB|document\.cookie", script.text)
        assert (await http.post(f"{stack.base_url}/console")).status_code == 405


async def test_shutting_down_refuses_held_calls_with_a_clean_error(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=30) as http:
        approver = approver_token(stack)
        answers: list[httpx2.Response] = []

        async def call() -> None:
            answers.append(await call_tool(http, stack.mcp_url(), stack.token(), "echo", {"message": "late"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await wait_pending(http, stack, approver)
            stack.app.begin_shutdown()
        assert answers[0].status_code == 503
        assert "shutting down" in answers[0].json()["error"]["message"]
        later = await call_tool(http, stack.mcp_url(), stack.token(), "echo", {"message": "later"})
        assert later.status_code == 503
        assert stack.tap.calls("tools/call") == []


async def test_the_cli_lists_and_approves_a_held_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=30) as http:
        approver = approver_token(stack)
        config = str(stack.directory / "gateway.toml")
        answers: list[httpx2.Response] = []

        async def call() -> None:
            answers.append(
                await call_tool(http, stack.mcp_url(), stack.token(), "echo", {"message": "cli"}, reason="\x1b[2Jhi")
            )

        def cli(*argv: str) -> tuple[int, str]:
            capsys.readouterr()
            code = gateway_cli(list(argv))
            return code, capsys.readouterr().out

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            (item,) = await wait_pending(http, stack, approver)
            code, out = await anyio.to_thread.run_sync(
                cli, "approvals", "list", "--config", config, "--token", approver
            )
            assert code == 0 and item["id"] in out and "echo" in out
            assert "\\x1b[2Jhi" in out and "\x1b" not in out  # the agent's text cannot drive the terminal
            code, _ = await anyio.to_thread.run_sync(
                cli, "approvals", "approve", item["id"], "--token", "x", "--config", config
            )
            assert code == 2  # a bad token is a clean refusal
            argv = ("approvals", "approve", item["id"], "--reason", "ok", "--config", config, "--token", approver)
            code, out = await anyio.to_thread.run_sync(cli, *argv)
            assert code == 0 and out.startswith("approve: ")
        assert answers[0].json()["result"]["content"][0]["text"] == "cli"
        await wait_none_pending(http, stack, approver)
