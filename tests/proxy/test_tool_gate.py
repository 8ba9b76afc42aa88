"""SECURITY.md "an unknown tool never reaches the upstream" (and looks unknown) and "Tool-call arguments that do not
validate against the pinned input schema: refused, not forwarded", in both eras, through a real stack."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx2
import pytest

from examples.everything_server import build_server
from mcp_gateway.audit.record import AuditRecord
from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.identity.tool_pins import tool_sha256
from tests._mcp import HANDSHAKE, MODERN_META, modern_headers, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import ScriptedUpstream, call_body, json_error, modern_call_body, read_events, send_raw

pytestmark = pytest.mark.anyio

UNPINNED = "test_simple_text"  # exists upstream, deliberately left out of tools_sha256


async def _pins() -> dict[str, str]:
    tools = await build_server().list_tools()
    pins = {t.name: tool_sha256(t.model_dump(by_alias=True, mode="json", exclude_none=True)) for t in tools}
    del pins[UNPINNED]
    return pins


async def _allowlist(strict: bool) -> str:
    pins = "\n".join(f"{json.dumps(name)} = {json.dumps(digest)}" for name, digest in sorted((await _pins()).items()))
    flag = "strict_arguments = true\n" if strict else ""
    return f'{flag}default_scopes = ["tools:call"]\n[servers.everything.tools_sha256]\n{pins}\n'


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    sink = MemoryAuditSink()
    allowlist = await _allowlist(strict=False)
    async with gateway_stack(tmp_path_factory.mktemp("tools"), allowlist=allowlist, audit=sink) as stack:
        stack.extra["sink"] = sink
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


@contextmanager
def no_call_forwarded(stack: Stack) -> Iterator[None]:
    before = len(stack.tap.calls("tools/call"))
    yield
    assert stack.tap.calls("tools/call")[before:] == []


def _last_refusal(stack: Stack) -> AuditRecord:
    sink: MemoryAuditSink = stack.extra["sink"]
    return [r for r in sink.records if r.event_type == "refusal"][-1]


async def _call(http: httpx2.AsyncClient, stack: Stack, era: str, tool: str, arguments: Any) -> httpx2.Response:
    """One tools/call in `era` (a fresh handshake session for the handshake era); the response, read whole."""
    token = stack.token(["tools:call"])
    if era == "modern":
        body = modern_call_body(tool)
        body["params"]["arguments"] = arguments
        return await http.post(stack.mcp_url(), headers=modern_headers(token, "tools/call", tool), json=body)
    session = await open_session(http, stack.mcp_url(), token)
    body = call_body(tool)
    body["params"]["arguments"] = arguments
    return await http.post(stack.mcp_url(), headers=post_headers(token, version=HANDSHAKE, session=session), json=body)


async def _message(response: httpx2.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        messages = [json.loads(e.data) for e in [*(await _events(response))] if e.data]
        return [m for m in messages if "id" in m][-1]
    body: dict[str, Any] = response.json()
    return body


async def _events(response: httpx2.Response) -> list[Any]:
    return [event async for event in read_events(response)]


async def _direct_unknown_tool_answer(stack: Stack, era: str) -> dict[str, Any]:
    """What the upstream itself answers for a tool it does not have (no gateway in between)."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        if era == "modern":
            headers |= {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "no_such_tool"}
            body = call_body("no_such_tool", {}, _meta=dict(MODERN_META))
            return (await http.post(stack.upstream_url, headers=headers, json=body)).json()["result"]
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
        }
        opened = await http.post(stack.upstream_url, headers=headers, json=init)
        headers |= {"mcp-protocol-version": HANDSHAKE, "mcp-session-id": opened.headers["mcp-session-id"]}
        await http.post(
            stack.upstream_url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
        )
        answered = await http.post(stack.upstream_url, headers=headers, json=call_body("no_such_tool", {}))
        return (await _message(answered))["result"]


@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_unknown_tool_never_reaches_the_upstream_and_is_answered_as_the_upstream_answers_it(
    stack: Stack, http: httpx2.AsyncClient, era: str
) -> None:
    with anyio.fail_after(20):
        direct = await _direct_unknown_tool_answer(stack, era)
        with no_call_forwarded(stack):
            response = await _call(http, stack, era, "no_such_tool", {})
    assert response.status_code == 200
    answer = await _message(response)
    # Shape and words as the upstream's own: an isError result, not "quarantined: not pinned".
    direct.pop("_meta", None)  # the upstream's serverInfo, which the gateway does not make up
    assert answer["result"] == direct
    assert answer["result"]["content"] == [{"type": "text", "text": "Unknown tool: no_such_tool"}]
    record = _last_refusal(stack)
    assert (record.tool, record.decision, record.policy_rule) == ("no_such_tool", "deny", "unknown_tool")


@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_tool_that_exists_but_is_not_pinned_stays_quarantined(
    stack: Stack, http: httpx2.AsyncClient, era: str
) -> None:
    with anyio.fail_after(20), no_call_forwarded(stack):
        response = await _call(http, stack, era, UNPINNED, {})
    assert response.status_code == 200
    assert json_error(response) == {
        "code": -32602,
        "message": f"Tool {UNPINNED!r} is quarantined: it is not pinned in the allowlist",
    }
    assert _last_refusal(stack).policy_rule == "tools_sha256"


async def test_a_flood_of_made_up_tool_names_lists_the_upstream_tools_at_most_once(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    with anyio.fail_after(20):
        await _call(http, stack, "modern", "warm_up_name", {})  # the catalogue has a whole listing now
        before = len(stack.tap.calls("tools/list"))
        with no_call_forwarded(stack):
            for index in range(10):
                response = await _call(http, stack, "modern", f"made_up_{index}", {})
                assert response.json()["result"]["isError"] is True
    assert len(stack.tap.calls("tools/list")) - before <= 1


BAD_ARGUMENTS = [
    ("echo", {"message": 5}, "'/message': rule 'type' (schema '/properties/message/type')"),
    ("echo", {}, "'': rule 'required' (schema '/required')"),
    ("echo", ["message"], "'': rule 'type' (schema '/type')"),
    (
        "json_schema_2020_12_tool",
        {"email": "a@example.com", "address": {"city": 5}},
        "'/address/city': rule 'type' (schema '/$defs/address/properties/city/type')",
    ),
    ("json_schema_2020_12_tool", {"name": "n"}, "'': rule 'anyOf' (schema '/allOf/0/anyOf')"),
]


@pytest.mark.parametrize("era", ["modern", "handshake"])
@pytest.mark.parametrize(("tool", "arguments", "where"), BAD_ARGUMENTS)
async def test_arguments_that_break_the_pinned_input_schema_are_refused_not_forwarded(
    stack: Stack, http: httpx2.AsyncClient, era: str, tool: str, arguments: Any, where: str
) -> None:
    with anyio.fail_after(20), no_call_forwarded(stack):
        response = await _call(http, stack, era, tool, arguments)
    assert response.status_code == 200
    assert json_error(response) == {
        "code": -32602,
        "message": f"Invalid params: arguments of tool {tool!r} break its input schema at {where}",
    }
    record = _last_refusal(stack)
    assert (record.tool, record.decision, record.policy_rule) == (tool, "deny", "input_schema")


@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_arguments_that_validate_are_forwarded_once(stack: Stack, http: httpx2.AsyncClient, era: str) -> None:
    before = len(stack.tap.calls("tools/call"))
    with anyio.fail_after(20):
        response = await _call(http, stack, era, "echo", {"message": "hi", "undeclared": 1})
        answer = await _message(response)
    assert answer["result"]["content"][0]["text"] == "hi"
    assert len(stack.tap.calls("tools/call")) == before + 1


@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_strict_arguments_refuses_properties_the_schema_does_not_declare(
    tmp_path: Any, http: httpx2.AsyncClient, era: str
) -> None:
    sink = MemoryAuditSink()
    async with gateway_stack(tmp_path, allowlist=await _allowlist(strict=True), audit=sink) as stack:
        stack.extra["sink"] = sink
        with anyio.fail_after(20), no_call_forwarded(stack):
            response = await _call(http, stack, era, "echo", {"message": "hi", "undeclared": 1})
        with anyio.fail_after(20):
            allowed = await _message(await _call(http, stack, era, "echo", {"message": "hi"}))
    assert json_error(response) == {
        "code": -32602,
        "message": "Invalid params: arguments of tool 'echo' break its input schema at '': "
        "rule 'unevaluatedProperties' (schema '/unevaluatedProperties')",
    }
    assert _last_refusal(stack).policy_rule == "input_schema"
    assert allowed["result"]["content"][0]["text"] == "hi"


def _paged_upstream(*, failing: bool = False) -> ScriptedUpstream:
    """An upstream whose tools/list has two pages (JSON answers), or fails with 500."""

    async def answer(scope: Any, receive: Any, send: Any, body: dict[str, Any]) -> None:
        if failing and body.get("method") == "tools/list":
            await send_raw(send, 500, b"{}")
            return
        if body.get("method") == "tools/list":
            cursor = (body.get("params") or {}).get("cursor")
            result: dict[str, Any] = (
                {"tools": [PAGE_TWO_TOOL]} if cursor == "2" else {"tools": [PAGE_ONE_TOOL], "nextCursor": "2"}
            )
        else:
            result = {"content": [{"type": "text", "text": "called"}]}
        await send_raw(send, 200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode())

    return ScriptedUpstream(answer)


PAGE_ONE_TOOL = {"name": "first", "inputSchema": {"type": "object"}}
PAGE_TWO_TOOL = {"name": "second", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
PAGED_ALLOWLIST = (
    'default_scopes = ["tools:call"]\n[servers.everything.tools_sha256]\n'
    f'first = "{tool_sha256(PAGE_ONE_TOOL)}"\nsecond = "{tool_sha256(PAGE_TWO_TOOL)}"\n'
)


async def test_the_gateway_lists_every_page_of_the_upstream_tools_before_judging_a_call(
    tmp_path: Any, http: httpx2.AsyncClient
) -> None:
    upstream = _paged_upstream()
    async with gateway_stack(tmp_path, allowlist=PAGED_ALLOWLIST, upstream_app=upstream) as stack:
        with anyio.fail_after(20):
            bad = await _call(http, stack, "modern", "second", {"n": "x"})
            good = await _call(http, stack, "modern", "second", {"n": 1})
            unknown = await _call(http, stack, "modern", "third", {})
    assert json_error(bad)["message"].endswith("at '/n': rule 'type' (schema '/properties/n/type')")
    assert good.json()["result"]["content"][0]["text"] == "called"
    assert unknown.json()["result"]["content"][0]["text"] == "Unknown tool: third"
    calls = [
        (b["method"], (b.get("params") or {}).get("cursor") or (b.get("params") or {}).get("name"))
        for b in upstream.bodies
    ]
    assert calls == [("tools/list", None), ("tools/list", "2"), ("tools/call", "second")]


async def test_a_tool_call_is_refused_not_forwarded_when_the_upstream_tools_cannot_be_listed(
    tmp_path: Any, http: httpx2.AsyncClient
) -> None:
    upstream = _paged_upstream(failing=True)
    async with gateway_stack(tmp_path, allowlist=PAGED_ALLOWLIST, upstream_app=upstream) as stack:
        with anyio.fail_after(20):
            response = await _call(http, stack, "modern", "first", {})
    assert response.status_code == 502
    assert json_error(response) == {
        "code": -32603,
        "message": "Bad Gateway: the upstream's tool list could not be read, so tool 'first' cannot be checked",
    }
    assert [b["method"] for b in upstream.bodies] == ["tools/list"]
