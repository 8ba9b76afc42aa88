"""Per-tool policy through the whole gateway: list filtering, deny by default, step-up for every governed
method, exact scope matching, hierarchies, rate limits and server-to-client request governance.

One stack serves three routes built from the same rules: `everything` (step-up-able entries listed),
`hidden` (`hide_step_up = true`, on a second upstream) and `limited` (the gateway-wide rate limit).
Expectations are written out literally from the rules below, not recomputed with the gateway's own code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.shared.exceptions import MCPError

from examples.everything_server import build_app
from tests._mcp import HANDSHAKE, modern_headers, open_session, post_headers
from tests._servers import serve_asgi
from tests._stack import Stack, UpstreamTap, gateway_stack
from tests.e2e._auth_support import assert_challenge, audit_rows, jsonrpc_answer, rpc, tool_call

pytestmark = pytest.mark.anyio

MODES = ("legacy", "2026-07-28")

RULES = """
[servers.{name}.tool_scopes]
echo = ["tools:read"]
show_request_headers = []
emit_progress = ["tools:call"]
ask_model = ["tools:call"]
ask_user = ["tools:call"]
delete_everything = ["admin"]

[servers.{name}.resource_scopes]
"test://static-" = ["resources:read"]
"test://template/" = ["tools:read"]

[servers.{name}.prompt_scopes]
test_simple_prompt = ["prompts:read"]
test_prompt_with_arguments = ["prompts:read", "admin"]

[servers.{name}.rate_limits]  # empty: this route is not rate limited (the gateway-wide table is for `limited`)
"""

# No default_scopes anywhere: what no rule names is denied and hidden.
GATEWAY_EXTRA = """
scope_implications = { admin = ["tools:call", "tools:read"] }

[rate_limits]
per_agent = { rate = 1.0, burst = 3 }
"""

CLIENTS = {
    "agent-a": ("tools:read", "tools:call", "resources:read", "prompts:read", "admin"),
    "agent-b": ("tools:read", "tools:call", "resources:read", "prompts:read", "admin"),
    # Scope strings that look like `admin` or `tools:call` and are not (RFC 6749 §3.3: exact tokens).
    "agent-odd": ("tools:read", "admin2", "ADMIN", "tools:read,admin", "tools:call:x"),
}

TOKENS = {
    "T1 tools:read": ("tools:read",),
    "T2 tools:read tools:call resources:read": ("tools:read", "tools:call", "resources:read"),
    "T3 admin prompts:read": ("admin", "prompts:read"),
}

RULE_TOOLS = {"echo", "show_request_headers", "emit_progress", "ask_model", "ask_user", "delete_everything"}
RULE_RESOURCES = {"test://static-text", "test://static-binary"}
RULE_TEMPLATES = {"test://template/{id}/data"}
RULE_PROMPTS = {"test_simple_prompt", "test_prompt_with_arguments"}

# (token, hide_step_up) → what each list shows. With step-up-able entries listed, every ruled entry shows
# for every token; hidden, only what the token (with `admin` implying tools:call and tools:read) may use now.
VISIBLE: dict[tuple[str, bool], dict[str, set[str]]] = {
    **{
        (token, False): {
            "tools": RULE_TOOLS,
            "resources": RULE_RESOURCES,
            "templates": RULE_TEMPLATES,
            "prompts": RULE_PROMPTS,
        }
        for token in TOKENS
    },
    ("T1 tools:read", True): {
        "tools": {"echo", "show_request_headers"},
        "resources": set(),
        "templates": RULE_TEMPLATES,
        "prompts": set(),
    },
    ("T2 tools:read tools:call resources:read", True): {
        "tools": {"echo", "show_request_headers", "emit_progress", "ask_model", "ask_user"},
        "resources": RULE_RESOURCES,
        "templates": RULE_TEMPLATES,
        "prompts": set(),
    },
    ("T3 admin prompts:read", True): {
        "tools": RULE_TOOLS,
        "resources": set(),
        "templates": RULE_TEMPLATES,
        "prompts": RULE_PROMPTS,
    },
}


@dataclass
class World:
    stack: Stack
    second_tap: UpstreamTap
    http: httpx2.AsyncClient
    sessions: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, scopes: tuple[str, ...], *, client: str = "agent-a", route: str = "everything") -> str:
        return self.stack.token(scopes, client=client, resource=self.stack.mcp_url(route))

    def forwarded(self) -> int:
        return len(self.stack.tap.requests) + len(self.second_tap.requests)

    def forwarded_calls(self) -> int:
        return len(self.stack.tap.calls("tools/call")) + len(self.second_tap.calls("tools/call"))


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    second_tap = UpstreamTap(build_app())
    async with serve_asgi(second_tap) as second:
        allowlist = (
            'server_requests = ["elicitation"]\n'
            + RULES.format(name="everything")
            + f'\n[servers.hidden]\nurl = "{second}/mcp"\nhide_step_up = true\n'
            + RULES.format(name="hidden")
            + f'\n[servers.limited]\nurl = "{second}/mcp"\ndefault_scopes = ["tools:read"]\n'
        )
        async with (
            gateway_stack(
                tmp_path_factory.mktemp("policy"), allowlist=allowlist, gateway_extra=GATEWAY_EXTRA, clients=CLIENTS
            ) as stack,
            httpx2.AsyncClient(timeout=20) as http,
        ):
            yield World(stack, second_tap, http)


# --- helpers -----------------------------------------------------------------------------------------


async def _post(
    world: World,
    token: str,
    method: str,
    params: dict[str, Any],
    *,
    name: str | None,
    mode: str = "2026-07-28",
    route: str = "everything",
    id: int = 7,
) -> httpx2.Response:
    """One raw request in either era (handshake-era sessions opened once per token and route)."""
    url = world.stack.mcp_url(route)
    if mode == "2026-07-28":
        headers = modern_headers(token, method, name)
        return await world.http.post(url, json=rpc(method, params, id=id), headers=headers)
    session = world.sessions.get((token, route))
    if session is None:
        session = world.sessions[(token, route)] = await open_session(world.http, url, token)
    body = rpc(method, params, id=id, modern=False)
    return await world.http.post(url, json=body, headers=post_headers(token, version=HANDSHAKE, session=session))


async def _lists(stack: Stack, token: str, mode: str, route: str) -> dict[str, set[str]]:
    async with stack.client(token, mode=mode, server=route) as client:
        return {
            "tools": {tool.name for tool in (await client.list_tools()).tools},
            "resources": {str(r.uri) for r in (await client.list_resources()).resources},
            "templates": {t.uri_template for t in (await client.list_resource_templates()).resource_templates},
            "prompts": {p.name for p in (await client.list_prompts()).prompts},
        }


# --- list filtering ----------------------------------------------------------------------------------


async def test_lists_seen_by_three_tokens_match_the_policy_exactly_in_both_eras_with_and_without_hide_step_up(
    world: World,
) -> None:
    stack = world.stack
    with anyio.fail_after(30):
        # Ground truth: the upstream lists more than the rules name, so filtering has something to remove.
        async with Client(stack.upstream_url, mode="legacy") as upstream:
            everything = {
                "tools": {tool.name for tool in (await upstream.list_tools()).tools},
                "resources": {str(r.uri) for r in (await upstream.list_resources()).resources},
                "templates": {t.uri_template for t in (await upstream.list_resource_templates()).resource_templates},
                "prompts": {p.name for p in (await upstream.list_prompts()).prompts},
            }
    for kind, ruled in (
        ("tools", RULE_TOOLS),
        ("resources", RULE_RESOURCES),
        ("templates", RULE_TEMPLATES),
        ("prompts", RULE_PROMPTS),
    ):
        assert ruled <= everything[kind], f"the upstream lacks some ruled {kind}: {ruled - everything[kind]}"
    assert everything["tools"] - RULE_TOOLS and everything["resources"] - RULE_RESOURCES
    assert everything["prompts"] - RULE_PROMPTS

    failures: list[str] = []
    for (token_name, hidden), expected in VISIBLE.items():
        route = "hidden" if hidden else "everything"
        token = world.token(TOKENS[token_name], route=route)
        for mode in MODES:
            with anyio.fail_after(30):
                seen = await _lists(stack, token, mode, route)
            if seen != expected:
                failures.append(
                    f"{token_name} on {route} ({mode}): "
                    + "; ".join(
                        f"{kind} extra {sorted(seen[kind] - want)} missing {sorted(want - seen[kind])}"
                        for kind, want in expected.items()
                        if seen[kind] != want
                    )
                )
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


# --- deny by default, and what the body says is what is judged ---------------------------------------


async def test_a_tool_no_rule_names_is_denied_without_revealing_whether_it_exists_and_never_forwarded(
    world: World,
) -> None:
    token = world.token(TOKENS["T2 tools:read tools:call resources:read"])
    for mode in MODES:
        messages = {}
        for tool in ("test_simple_text", "no_such_tool"):
            before = world.forwarded_calls()
            with anyio.fail_after(15):
                response = await _post(
                    world, token, "tools/call", {"name": tool, "arguments": {}}, name=tool, mode=mode
                )
            assert world.forwarded_calls() == before, f"{tool} ({mode}) was forwarded"
            assert response.status_code == 200, response.text
            answer = jsonrpc_answer(response)
            assert answer["id"] == 7 and "result" not in answer, answer
            assert answer["error"]["code"] == -32602, answer
            assert "not permitted" in answer["error"]["message"] and tool in answer["error"]["message"], answer
            messages[tool] = answer["error"]["message"].replace(tool, "<tool>")
        # An existing and a non-existent tool are refused with the same words.
        assert messages["test_simple_text"] == messages["no_such_tool"], messages
    rows = [row for row in await audit_rows(world.stack) if row["tool"] in ("test_simple_text", "no_such_tool")]
    assert {(row["decision"], row["policy_rule"]) for row in rows} == {("deny", "no_rule")}, rows
    assert len(rows) == 4


async def test_a_body_tool_name_that_differs_from_mcp_name_is_refused_with_32020_and_not_forwarded(
    world: World,
) -> None:
    admin = world.token(("admin",))
    reader = world.token(("tools:read",))
    cases: list[tuple[str, str, str, dict[str, Any], str]] = [
        (
            "body delete_everything, header echo",
            reader,
            "tools/call",
            {"name": "delete_everything", "arguments": {}},
            "echo",
        ),
        (
            "body echo, header delete_everything",
            reader,
            "tools/call",
            {"name": "echo", "arguments": {"message": "x"}},
            "delete_everything",
        ),
        (
            "mismatch with a token allowed both",
            admin,
            "tools/call",
            {"name": "delete_everything", "arguments": {}},
            "echo",
        ),
        (
            "resources/read uri differs from Mcp-Name",
            admin,
            "resources/read",
            {"uri": "test://static-text"},
            "test://template/1/data",
        ),
        (
            "prompts/get name differs from Mcp-Name",
            admin,
            "prompts/get",
            {"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}},
            "test_simple_prompt",
        ),
    ]
    for label, token, method, params, header_name in cases:
        before = world.forwarded()
        with anyio.fail_after(15):
            response = await _post(world, token, method, params, name=header_name)
        assert world.forwarded() == before, f"{label}: forwarded"
        assert response.status_code == 400, f"{label}: {response.status_code} {response.text[:200]}"
        assert response.json()["error"]["code"] == -32020, f"{label}: {response.text[:200]}"


async def test_a_batch_hiding_a_second_call_is_refused_and_nothing_of_it_is_forwarded(world: World) -> None:
    stack = world.stack
    token = world.token(("tools:read",))
    session = await open_session(world.http, stack.mcp_url(), token)
    legacy_batch = [
        tool_call("echo", {"message": "innocent"}, id=1, modern=False),
        tool_call("delete_everything", {}, id=2, modern=False),
    ]
    modern_batch = [tool_call("echo", {"message": "innocent"}, id=1), tool_call("delete_everything", {}, id=2)]
    before = world.forwarded()
    with anyio.fail_after(15):
        legacy = await world.http.post(
            stack.mcp_url(), json=legacy_batch, headers=post_headers(token, version=HANDSHAKE, session=session)
        )
        modern = await world.http.post(
            stack.mcp_url(), json=modern_batch, headers=modern_headers(token, "tools/call", "echo")
        )
    assert world.forwarded() == before, "part of a batch reached the upstream"
    for response in (legacy, modern):
        assert response.status_code == 400, response.text[:200]
        assert response.json()["error"]["code"] == -32600, response.text[:200]


# --- step-up for resources and prompts; exact matching; hierarchy ------------------------------------


@dataclass(frozen=True)
class Governed:
    id: str
    scopes: tuple[str, ...]
    method: str
    params: dict[str, Any]
    name: str
    expect: str  # "allow" | "step_up:<scope>" | "deny"
    client: str = "agent-a"


GOVERNED = [
    Governed(
        "resources/read without resources:read",
        ("tools:read",),
        "resources/read",
        {"uri": "test://static-text"},
        "test://static-text",
        "step_up:resources:read",
    ),
    Governed(
        "resources/read with resources:read",
        ("resources:read",),
        "resources/read",
        {"uri": "test://static-text"},
        "test://static-text",
        "allow",
    ),
    Governed(
        "resources/read of a URI no rule covers",
        ("resources:read", "admin"),
        "resources/read",
        {"uri": "test://watched-resource"},
        "test://watched-resource",
        "deny",
    ),
    Governed(
        "resources/read by the longest prefix (template rule: tools:read)",
        ("tools:read",),
        "resources/read",
        {"uri": "test://template/1/data"},
        "test://template/1/data",
        "allow",
    ),
    Governed(
        "prompts/get without prompts:read",
        ("tools:read", "tools:call", "resources:read"),
        "prompts/get",
        {"name": "test_simple_prompt"},
        "test_simple_prompt",
        "step_up:prompts:read",
    ),
    Governed(
        "prompts/get with prompts:read",
        ("prompts:read",),
        "prompts/get",
        {"name": "test_simple_prompt"},
        "test_simple_prompt",
        "allow",
    ),
    Governed(
        "prompts/get names every scope the prompt needs",
        ("prompts:read",),
        "prompts/get",
        {"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}},
        "test_prompt_with_arguments",
        "step_up:prompts:read admin",
    ),
    Governed(
        "prompts/get of a prompt no rule covers",
        ("prompts:read", "admin"),
        "prompts/get",
        {"name": "test_prompt_with_image"},
        "test_prompt_with_image",
        "deny",
    ),
    # Exact matching: admin2, ADMIN, "tools:read,admin", tools:call:x are not admin or tools:call.
    Governed(
        "admin2 ADMIN 'tools:read,admin' do not make admin",
        CLIENTS["agent-odd"],
        "tools/call",
        {"name": "delete_everything", "arguments": {}},
        "delete_everything",
        "step_up:admin",
        client="agent-odd",
    ),
    Governed(
        "tools:call:x does not make tools:call",
        CLIENTS["agent-odd"],
        "tools/call",
        {"name": "emit_progress", "arguments": {"steps": 1}},
        "emit_progress",
        "step_up:tools:call",
        client="agent-odd",
    ),
    Governed(
        "the odd client's exact tools:read still counts",
        CLIENTS["agent-odd"],
        "tools/call",
        {"name": "echo", "arguments": {"message": "x"}},
        "echo",
        "allow",
        client="agent-odd",
    ),
    # Hierarchy: admin implies tools:call and tools:read, in decisions...
    Governed(
        "admin implies tools:read",
        ("admin",),
        "tools/call",
        {"name": "echo", "arguments": {"message": "x"}},
        "echo",
        "allow",
    ),
    Governed(
        "admin implies tools:call",
        ("admin",),
        "tools/call",
        {"name": "emit_progress", "arguments": {"steps": 1}},
        "emit_progress",
        "allow",
    ),
    Governed(
        "tools:call does not imply tools:read",
        ("tools:call",),
        "tools/call",
        {"name": "echo", "arguments": {"message": "x"}},
        "echo",
        "step_up:tools:read",
    ),
    # ...and in challenges: the scope the operation needs, never the broader one that implies it.
    Governed(
        "the challenge names tools:read, not admin",
        ("prompts:read",),
        "tools/call",
        {"name": "echo", "arguments": {"message": "x"}},
        "echo",
        "step_up:tools:read",
    ),
    Governed(
        "implication does not run upwards",
        ("tools:read", "tools:call"),
        "tools/call",
        {"name": "delete_everything", "arguments": {}},
        "delete_everything",
        "step_up:admin",
    ),
    Governed(
        "an empty rule admits any token",
        ("prompts:read",),
        "tools/call",
        {"name": "show_request_headers", "arguments": {}},
        "show_request_headers",
        "allow",
    ),
]


async def test_resources_prompts_exact_scopes_and_hierarchy_are_decided_per_operation_through_the_gateway(
    world: World,
) -> None:
    stack = world.stack
    metadata_url = stack.config.resource_metadata_url("everything")
    failures: list[str] = []
    for mode in MODES:
        for case in GOVERNED:
            token = world.token(case.scopes, client=case.client)
            before = len(stack.tap.calls(case.method))
            try:
                with anyio.fail_after(15):
                    response = await _post(world, token, case.method, case.params, name=case.name, mode=mode)
                forwarded = len(stack.tap.calls(case.method)) - before
                if case.expect == "allow":
                    assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                    answer = jsonrpc_answer(response)
                    assert "result" in answer and not answer["result"].get("isError"), answer
                    assert forwarded == 1, f"forwarded {forwarded} times"
                elif case.expect == "deny":
                    assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                    assert "not permitted" in jsonrpc_answer(response)["error"]["message"]
                    assert forwarded == 0, "forwarded"
                else:
                    assert_challenge(
                        response,
                        status=403,
                        error="insufficient_scope",
                        scope=case.expect.split(":", 1)[1],
                        resource_metadata=metadata_url,
                    )
                    assert forwarded == 0, "forwarded"
            except AssertionError as exc:
                failures.append(f"{case.id} ({mode}): {exc}")
    if failures:
        pytest.fail(f"{len(failures)} cases failed:\n" + "\n".join(failures), pytrace=False)
    rows = [
        row for row in await audit_rows(stack) if row["agent_id"] == "agent-odd" and row["tool"] == "delete_everything"
    ]
    assert rows and all(
        (row["decision"], row["scopes_required"]) == ("step_up", ["admin"])
        and {"admin2", "ADMIN", "tools:read,admin"} <= set(row["scope_granted"])
        for row in rows
    ), rows
    rows = [row for row in await audit_rows(stack) if row["tool"] == "echo" and row["scope_granted"] == ["admin"]]
    assert rows and all(
        (row["decision"], row["policy_rule"], row["scopes_required"]) == ("allow", "tool_scopes.echo", ["tools:read"])
        for row in rows
    ), rows


# --- rate limits -------------------------------------------------------------------------------------


async def test_a_runaway_agent_gets_429_with_retry_after_while_another_agent_is_not_throttled(world: World) -> None:
    runaway = world.token(("tools:read",), client="agent-a", route="limited")
    other = world.token(("tools:read",), client="agent-b", route="limited")
    before = len(world.second_tap.calls("tools/call"))

    async def call(token: str, n: int) -> httpx2.Response:
        return await _post(
            world,
            token,
            "tools/call",
            {"name": "echo", "arguments": {"message": str(n)}},
            name="echo",
            route="limited",
            id=n,
        )

    with anyio.fail_after(20):
        runaway_responses = [await call(runaway, n) for n in range(8)]
        other_responses = [await call(other, n) for n in range(3)]
    statuses = [r.status_code for r in runaway_responses]
    assert statuses[:3] == [200, 200, 200], statuses  # burst = 3
    assert 429 in statuses[3:], statuses
    assert [r.status_code for r in other_responses] == [200, 200, 200], "agent-b was throttled by agent-a's bucket"
    forwarded = len(world.second_tap.calls("tools/call")) - before
    assert forwarded == statuses.count(200) + 3, "a throttled call reached the upstream"
    throttled = next(r for r in runaway_responses if r.status_code == 429)
    retry_after = throttled.headers.get("retry-after", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 2, retry_after  # rate 1/s: about a second
    error = throttled.json()
    assert error["id"] == runaway_responses.index(throttled), error
    assert error["error"]["code"] == -32029 and error["error"]["data"]["retryAfter"] == int(retry_after), error
    # Other routes carry their own (empty) rate-limit table: agent-a is not throttled there.
    with anyio.fail_after(15):
        elsewhere = await _post(
            world,
            world.token(("tools:read",)),
            "tools/call",
            {"name": "echo", "arguments": {"message": "x"}},
            name="echo",
        )
    assert elsewhere.status_code == 200, elsewhere.text[:200]


# --- server-to-client requests -----------------------------------------------------------------------


@dataclass
class Callbacks:
    sampled: list[Any] = field(default_factory=list)
    elicited: list[Any] = field(default_factory=list)

    async def sampling(self, context: Any, params: Any) -> types.CreateMessageResult:
        self.sampled.append(params)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="m")

    async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.elicited.append(params)
        return types.ElicitResult(action="accept", content={"answer": "yes"})


@pytest.mark.parametrize("mode", MODES)
async def test_server_requests_not_listed_never_reach_the_client_and_end_the_call_while_listed_ones_do(
    world: World, mode: str
) -> None:
    # server_requests = ["elicitation"]: sampling is refused. In the handshake eras it arrives as a
    # server-to-client request on the call's stream; at 2026-07-28 as an input-required result.
    stack = world.stack
    callbacks = Callbacks()
    token = world.token(("tools:call",))
    refused: Any = None
    async with stack.client(
        token, mode=mode, sampling_callback=callbacks.sampling, elicitation_callback=callbacks.elicitation
    ) as client:
        with anyio.fail_after(15):
            asked = await client.call_tool("ask_user", {"question": "proceed?"})
            try:
                refused = await client.call_tool("ask_model", {"prompt": "hi"})
            except MCPError as exc:
                refused = exc
    assert asked.content[0].text == "user action=accept, answer=yes"  # type: ignore[union-attr]
    assert len(callbacks.elicited) == 1, "the allowed elicitation request did not reach the client"
    assert callbacks.sampled == [], "a sampling request the allowlist does not name reached the client"
    # The refused call ends promptly, as an error, instead of waiting for an answer that never comes.
    assert isinstance(refused, MCPError) or refused.is_error, refused
    if mode == "legacy":
        # The gateway answered the upstream's request itself, with an error.
        answers = [json.loads(body) for _, _, body in stack.tap.requests if b'"error"' in body]
        assert any("sampling/createMessage" in a["error"]["message"] for a in answers if isinstance(a, dict)), answers
