"""The console in a real headless browser (Debian's chromium, driven by Playwright): approve a held call,
filter the audit log, and show hostile record fields as text."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
import httpx2
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.approvals._support import approval_stack, approver_token, wait_none_pending, wait_pending
from tests.e2e._audit_support import call_tool

pytestmark = pytest.mark.anyio

# Agents choose their request context: markup, an event handler and terminal escapes, all of it to be shown.
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">\x1b[31mRED\x1b[0m'


def _chromium() -> str:
    # Never skipped: scripts/bootstrap installs Debian's chromium package where it is missing.
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium executable: run scripts/bootstrap (apt-get install chromium) or set CHROMIUM")
    return path


def _shots(tmp_path: Path) -> Path:
    # MCP_GATEWAY_SCREENSHOTS=DIR keeps the screenshots (for notes); by default they go to the test's tmp dir.
    return Path(os.environ.get("MCP_GATEWAY_SCREENSHOTS") or tmp_path)


async def _use_token(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#token-status")).to_contain_text("Token in use")


async def test_an_approver_approves_a_held_call_and_audits_it_in_the_console(tmp_path: Path) -> None:
    async with approval_stack(tmp_path) as stack, httpx2.AsyncClient(timeout=30) as http:
        token = approver_token(stack, scopes=["approvals:decide", "audit:read"])
        await call_tool(http, stack.mcp_url(), stack.token(), "show_request_headers", {}, reason=HOSTILE)
        answers: list[httpx2.Response] = []

        async def held_call() -> None:
            reason = "weekly report <b>for</b> the board"
            answers.append(
                await call_tool(http, stack.mcp_url(), stack.token(), "echo", {"message": "send"}, reason=reason)
            )

        async with async_playwright() as driver, anyio.create_task_group() as tg:
            browser = await driver.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                await page.goto(f"{stack.base_url}/console")
                await _use_token(page, token)
                tg.start_soon(held_call)
                (item,) = await wait_pending(http, stack, token)
                await page.click("#pending-refresh")
                card = page.locator(f'article.approval[data-approval-id="{item["id"]}"]')
                await expect(card).to_contain_text("weekly report <b>for</b> the board")  # text, not markup
                await expect(card).to_contain_text(item["arguments_sha256"])
                await page.screenshot(path=str(_shots(tmp_path) / "console-pending.png"), full_page=True)
                await card.locator("input.reason").fill("checked with the board")
                await card.locator("button.approve").click()
                await expect(page.locator("#pending-status")).to_contain_text(f"Recorded: approve of {item['id']}")
                await wait_none_pending(http, stack, token)
                with anyio.fail_after(10):
                    while not answers:
                        await anyio.sleep(0.02)
                assert answers[0].json()["result"]["content"][0]["text"] == "send"
                await stack.app.audit.flush()

                await page.click("#tab-audit")
                await page.fill("#audit-filters input[name=tool]", "show_request_headers")
                await page.click("#audit-filters button[type=submit]")
                rows = page.locator("#audit-table tbody tr")
                await expect(rows).to_have_count(1)
                cell = rows.first.locator("td").last
                shown = await cell.text_content()
                assert shown == HOSTILE.replace("\x1b", "\\u001b")  # markup as text, ESC as a visible escape
                assert await page.evaluate("window.__pwned") is None  # nothing the agent wrote ran
                assert await page.locator("#audit-table img, #audit-table script").count() == 0
                await expect(page.locator("#verify-status")).to_contain_text("Chain verified")

                await page.fill("#audit-filters input[name=tool]", "echo")
                await page.click("#audit-filters button[type=submit]")
                await expect(rows).to_have_count(3)  # the call, its approval request and its approval
                await rows.first.click()
                await expect(page.locator("#audit-fields")).to_contain_text("user-of-approver")
                await page.select_option("#audit-filters select[name=decision]", "deny")
                await page.click("#audit-filters button[type=submit]")
                await expect(rows).to_have_count(0)
                await page.select_option("#audit-filters select[name=decision]", "")
                await page.fill("#audit-filters input[name=tool]", "")
                await page.click("#audit-filters button[type=submit]")
                await expect(rows).to_have_count(4)
                await rows.nth(1).click()
                await page.screenshot(path=str(_shots(tmp_path) / "console-audit.png"), full_page=True)
                events = await rows.locator("td:nth-child(8)").all_text_contents()
                assert sorted(events) == ["", "", "approval_decided", "approval_requested"]
                assert errors == []
            finally:
                await browser.close()
