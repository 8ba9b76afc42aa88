from __future__ import annotations

import copy
from typing import Any

import pytest

from mcp_gateway.policy import filter_list_result

from ._build import ADMIN_IMPLIES, policy, scopes

TOOL_SCOPES = {"echo": ["tools:read"], "delete_everything": ["admin"], "public_info": []}
ALL_TOOLS = ["echo", "delete_everything", "public_info", "add"]  # `add` has no rule of its own

READER = scopes("tools:read")
CALLER = scopes("tools:call")
ADMIN = scopes("admin")  # implies tools:call and tools:read


def _tools_list(names: list[str]) -> dict[str, Any]:
    return {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in names], "nextCursor": "c2"}


@pytest.mark.parametrize(
    ("default_scopes", "hide_step_up", "granted", "visible"),
    [
        # default_scopes = ["tools:call"], step-up-able tools shown: everyone sees everything
        (["tools:call"], False, READER, ["echo", "delete_everything", "public_info", "add"]),
        (["tools:call"], False, CALLER, ["echo", "delete_everything", "public_info", "add"]),
        (["tools:call"], False, ADMIN, ["echo", "delete_everything", "public_info", "add"]),
        # hide_step_up: each token sees exactly what it may call now
        (["tools:call"], True, READER, ["echo", "public_info"]),
        (["tools:call"], True, CALLER, ["public_info", "add"]),
        (["tools:call"], True, ADMIN, ["echo", "delete_everything", "public_info", "add"]),
        # no default_scopes: a tool without a rule is hidden from everyone, admin included
        (None, False, READER, ["echo", "delete_everything", "public_info"]),
        (None, False, CALLER, ["echo", "delete_everything", "public_info"]),
        (None, False, ADMIN, ["echo", "delete_everything", "public_info"]),
        (None, True, READER, ["echo", "public_info"]),
        (None, True, CALLER, ["public_info"]),
        (None, True, ADMIN, ["echo", "delete_everything", "public_info"]),
    ],
)
def test_three_tokens_see_exactly_the_tools_the_policy_shows_them(
    default_scopes: list[str] | None, hide_step_up: bool, granted: frozenset[str], visible: list[str]
) -> None:
    server_policy = policy(
        ADMIN_IMPLIES, tool_scopes=TOOL_SCOPES, default_scopes=default_scopes, hide_step_up=hide_step_up
    )
    filtered = filter_list_result("tools/list", _tools_list(ALL_TOOLS), server_policy, granted)
    assert [tool["name"] for tool in filtered["tools"]] == visible
    for name in ALL_TOOLS:  # the list agrees with what tools/call would decide
        decision = server_policy.decide(granted, "tools/call", name)
        shown = decision.kind == "allow" or (decision.kind == "step_up" and not hide_step_up)
        assert (name in visible) is shown


def test_malformed_items_are_dropped_without_raising() -> None:
    result = {
        "tools": [
            None,
            5,
            "echo",
            ["echo"],
            {},
            {"name": None},
            {"name": 5},
            {"name": ["echo"]},
            {"title": "echo"},
            {"name": "echo"},
        ]
    }
    filtered = filter_list_result("tools/list", result, policy(tool_scopes=TOOL_SCOPES), READER)
    assert filtered["tools"] == [{"name": "echo"}]


@pytest.mark.parametrize("items", [None, "echo", {"name": "echo"}, 3, ("echo",)])
def test_a_list_field_of_the_wrong_type_becomes_empty(items: object) -> None:
    filtered = filter_list_result("tools/list", {"tools": items}, policy(default_scopes=[]), ADMIN)
    assert filtered == {"tools": []}


def test_a_result_that_is_not_an_object_becomes_empty() -> None:
    assert filter_list_result("tools/list", ["not", "a", "dict"], policy(), ADMIN) == {}  # type: ignore[arg-type]


def test_other_keys_are_kept_and_the_input_is_not_modified() -> None:
    result = {
        "tools": [{"name": "echo"}, {"name": "delete_everything"}],
        "nextCursor": "page-2",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "everything", "version": "1"}},
        "ttlMs": 60000,
        "resultType": "complete",
        "cacheScope": "private",
    }
    before = copy.deepcopy(result)
    filtered = filter_list_result("tools/list", result, policy(tool_scopes=TOOL_SCOPES, hide_step_up=True), READER)
    assert result == before
    assert filtered is not result
    assert filtered == {**before, "tools": [{"name": "echo"}]}


def test_a_public_cache_scope_becomes_private_because_the_list_depends_on_the_token() -> None:
    result = {"tools": [{"name": "echo"}], "cacheScope": "public", "ttlMs": 1000}
    filtered = filter_list_result("tools/list", result, policy(tool_scopes=TOOL_SCOPES), READER)
    assert filtered["cacheScope"] == "private"
    assert result["cacheScope"] == "public"


def test_an_absent_list_field_stays_absent() -> None:
    assert filter_list_result("tools/list", {"nextCursor": "x"}, policy(), ADMIN) == {"nextCursor": "x"}


def test_methods_that_are_not_lists_come_back_unfiltered() -> None:
    result = {"content": [{"type": "text", "text": "hi"}], "tools": [{"name": "hidden"}]}
    filtered = filter_list_result("tools/call", result, policy(), scopes())
    assert filtered == result and filtered is not result


RESOURCE_POLICY: dict[str, Any] = dict(
    resource_scopes={"file:///public/": ["resources:read"], "file:///keys/": ["admin"]},
    prompt_scopes={"summarize": ["prompts:read"]},
    hide_step_up=True,
)


def test_resources_are_filtered_by_uri() -> None:
    result = {
        "resources": [
            {"uri": "file:///public/a.txt", "name": "a"},
            {"uri": "file:///keys/id_ed25519", "name": "key"},
            {"uri": "file:///elsewhere", "name": "no rule"},
            {"uri": "file:///public/../keys/id_ed25519", "name": "sneaky"},
            {"name": "no uri"},
        ]
    }
    filtered = filter_list_result("resources/list", result, policy(**RESOURCE_POLICY), scopes("resources:read"))
    assert [item["name"] for item in filtered["resources"]] == ["a"]


@pytest.mark.parametrize(
    ("granted", "visible"),
    [
        (scopes("resources:read"), ["file:///public/{name}"]),
        (scopes("admin"), ["file:///keys/{id}"]),
        (scopes("resources:read", "admin"), ["file:///public/{name}", "file:///keys/{id}"]),
    ],
)
def test_resource_templates_are_filtered_by_their_literal_prefix(granted: frozenset[str], visible: list[str]) -> None:
    templates = ["file:///public/{name}", "file:///keys/{id}", "file:///{path}", "{+anything}", "file:///pub{x}"]
    result = {"resourceTemplates": [{"uriTemplate": t, "name": t} for t in templates], "nextCursor": "n"}
    filtered = filter_list_result("resources/templates/list", result, policy(**RESOURCE_POLICY), granted)
    assert [item["uriTemplate"] for item in filtered["resourceTemplates"]] == visible
    assert filtered["nextCursor"] == "n"


def test_prompts_are_filtered_by_name() -> None:
    result = {"prompts": [{"name": "summarize"}, {"name": "draft"}]}
    server_policy = policy(**RESOURCE_POLICY)
    assert filter_list_result("prompts/list", result, server_policy, scopes("prompts:read"))["prompts"] == [
        {"name": "summarize"}
    ]
    assert filter_list_result("prompts/list", result, server_policy, scopes())["prompts"] == []
