from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.policy import Decision, DecisionKind, ServerPolicy

from ._build import ADMIN_IMPLIES, policy, scopes

EVERYTHING = policy(
    ADMIN_IMPLIES,
    default_scopes=["tools:call"],
    tool_scopes={"echo": ["tools:read"], "delete_everything": ["admin"], "open": [], "both": ["b", "a", "b"]},
    resource_scopes={
        "file:///": ["files:any"],
        "file:///public/": ["resources:read"],
        "file:///public/keys/": ["admin"],
    },
    prompt_scopes={"summarize": ["prompts:read"]},
)


def allow(required: tuple[str, ...], rule: str) -> Decision:
    return Decision("allow", required, rule)


def step_up(required: tuple[str, ...], rule: str) -> Decision:
    return Decision("step_up", required, rule)


def deny(rule: str) -> Decision:
    return Decision("deny", (), rule)


PUBLIC = "resource_scopes[file:///public/]"
KEYS = "resource_scopes[file:///public/keys/]"

STRICT = policy(  # no default_scopes: anything without its own rule is denied
    ADMIN_IMPLIES,
    tool_scopes={"echo": ["tools:read"]},
    resource_scopes={"file:///public/": ["resources:read"]},
    prompt_scopes={"summarize": ["prompts:read"]},
)


@pytest.mark.parametrize(
    ("granted", "kind"),
    [
        (scopes("admin"), "allow"),
        (scopes("admin2"), "step_up"),
        (scopes("ADMIN"), "step_up"),
        (scopes("admin,tools:call"), "step_up"),
        (scopes(" admin"), "step_up"),
        (scopes("admin "), "step_up"),
        (scopes("tools:call", "tools:read"), "step_up"),
        (scopes(), "step_up"),
    ],
)
def test_a_tool_needing_admin_is_allowed_only_for_the_exact_admin_token(
    granted: frozenset[str], kind: DecisionKind
) -> None:
    decision = EVERYTHING.decide(granted, "tools/call", "delete_everything")
    assert decision == Decision(kind, ("admin",), "tool_scopes.delete_everything")


@pytest.mark.parametrize(
    ("granted", "tool", "expected"),
    [
        (scopes("tools:read"), "echo", allow(("tools:read",), "tool_scopes.echo")),
        (scopes("admin"), "echo", allow(("tools:read",), "tool_scopes.echo")),  # by implication
        (scopes("tools:call"), "echo", step_up(("tools:read",), "tool_scopes.echo")),
        (scopes("tools:call"), "add", allow(("tools:call",), "default_scopes")),
        (scopes("admin"), "add", allow(("tools:call",), "default_scopes")),
        (scopes("tools:read"), "add", step_up(("tools:call",), "default_scopes")),
        (scopes(), "open", allow((), "tool_scopes.open")),  # `open = []`: any principal
        (scopes("zzz"), "open", allow((), "tool_scopes.open")),
        # the challenge is the configured list (deduplicated), not only what is missing
        (scopes("a"), "both", step_up(("b", "a"), "tool_scopes.both")),
        (scopes("a", "b"), "both", allow(("b", "a"), "tool_scopes.both")),
    ],
)
def test_tool_calls_use_the_tool_rule_else_the_default(granted: frozenset[str], tool: str, expected: Decision) -> None:
    assert EVERYTHING.decide(granted, "tools/call", tool) == expected


@pytest.mark.parametrize(
    ("method", "name"),
    [("tools/call", "add"), ("prompts/get", "draft"), ("resources/read", "file:///private/x")],
)
def test_without_default_scopes_anything_without_a_rule_is_denied(method: str, name: str) -> None:
    assert STRICT.decide(scopes("admin", "tools:call", "resources:read"), method, name) == Decision(
        "deny", (), "no_rule"
    )


def test_empty_default_scopes_allow_any_principal_where_no_rule_applies() -> None:
    open_policy = policy(default_scopes=[])
    assert open_policy.decide(scopes(), "tools/call", "anything") == allow((), "default_scopes")


@pytest.mark.parametrize(
    ("granted", "uri", "expected"),
    [
        (scopes("resources:read"), "file:///public/a.txt", allow(("resources:read",), PUBLIC)),
        (scopes(), "file:///public/a.txt", step_up(("resources:read",), PUBLIC)),
        (scopes("resources:read"), "file:///public/keys/id", step_up(("admin",), KEYS)),
        (scopes("admin"), "file:///public/keys/id", allow(("admin",), KEYS)),
        (scopes("files:any"), "file:///etc/hosts", allow(("files:any",), "resource_scopes[file:///]")),
        (scopes("tools:call"), "mem://notes", allow(("tools:call",), "default_scopes")),
        (scopes("admin"), "file:///public/../etc/shadow", deny("ambiguous_uri")),
        (scopes("admin"), "file:///public/%6beys/id", deny("ambiguous_uri")),
    ],
)
def test_resource_reads_use_the_longest_prefix_rule(granted: frozenset[str], uri: str, expected: Decision) -> None:
    assert EVERYTHING.decide(granted, "resources/read", uri) == expected


def test_subscribing_to_a_resource_is_judged_like_reading_it_and_unsubscribing_needs_nothing() -> None:
    uri = "file:///public/keys/id"
    assert EVERYTHING.decide(scopes("resources:read"), "resources/subscribe", uri).kind == "step_up"
    assert EVERYTHING.decide(scopes("admin"), "resources/subscribe", uri).kind == "allow"
    assert EVERYTHING.decide(scopes(), "resources/unsubscribe", uri) == allow((), "protocol")


@pytest.mark.parametrize(
    ("granted", "prompt", "expected"),
    [
        (scopes("prompts:read"), "summarize", allow(("prompts:read",), "prompt_scopes.summarize")),
        (scopes("tools:call"), "summarize", step_up(("prompts:read",), "prompt_scopes.summarize")),
        (scopes("tools:call"), "draft", allow(("tools:call",), "default_scopes")),
        (scopes(), "draft", step_up(("tools:call",), "default_scopes")),
    ],
)
def test_prompts_use_the_prompt_rule_else_the_default(granted: frozenset[str], prompt: str, expected: Decision) -> None:
    assert EVERYTHING.decide(granted, "prompts/get", prompt) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ref": {"type": "ref/prompt", "name": "summarize"}}, step_up(("prompts:read",), "prompt_scopes.summarize")),
        ({"ref": {"type": "ref/resource", "uri": "file:///public/{name}"}}, allow(("resources:read",), PUBLIC)),
        (
            {"ref": {"type": "ref/resource", "uri": "file:///{path}"}},
            step_up(("files:any",), "resource_scopes[file:///]"),
        ),
        ({"ref": {"type": "ref/resource", "uri": "file:///public/keys/{id}"}}, step_up(("admin",), KEYS)),
        ({"ref": {"type": "ref/tool", "name": "echo"}}, deny("malformed")),
        ({"ref": {"type": "ref/prompt"}}, deny("malformed")),
        ({"ref": "summarize"}, deny("malformed")),
        ({}, deny("malformed")),
    ],
)
def test_completion_is_judged_by_the_prompt_or_template_it_completes(
    params: dict[str, Any], expected: Decision
) -> None:
    assert EVERYTHING.decide_request(scopes("resources:read"), "completion/complete", params) == expected


@pytest.mark.parametrize(
    "method",
    [
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "logging/setLevel",
        "server/discover",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ],
)
def test_protocol_methods_need_no_scope_even_under_a_strict_policy(method: str) -> None:
    assert STRICT.decide(scopes(), method, None) == allow((), "protocol")
    assert STRICT.decide_request(scopes(), method, {}) == allow((), "protocol")


@pytest.mark.parametrize(
    "method",
    ["tasks/get", "tasks/result", "tasks/list", "tasks/cancel", "Tools/Call", "tools/call ", "vendor/run", ""],
)
def test_methods_nobody_governs_are_denied(method: str) -> None:
    assert EVERYTHING.decide(scopes("admin"), method, "echo") == deny("unknown_method")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", None),
        ("tools/call", []),
        ("tools/call", {}),
        ("tools/call", {"name": 7}),
        ("tools/call", {"name": ["echo"]}),
        ("prompts/get", {"name": None}),
        ("resources/read", {"uri": {"href": "file:///public/x"}}),
        ("resources/subscribe", "file:///public/x"),
    ],
)
def test_governed_requests_with_malformed_params_are_denied_not_raised(method: str, params: object) -> None:
    assert EVERYTHING.decide_request(scopes("admin"), method, params) == deny("malformed")


def test_decide_request_reads_the_name_from_params() -> None:
    assert EVERYTHING.decide_request(scopes("tools:read"), "tools/call", {"name": "echo", "arguments": {}}) == (
        EVERYTHING.decide(scopes("tools:read"), "tools/call", "echo")
    )
    assert EVERYTHING.decide_request(scopes(), "resources/read", {"uri": "file:///public/a"}).kind == "step_up"
    assert EVERYTHING.decide_request(scopes(), "prompts/get", {"name": "summarize"}).rule == "prompt_scopes.summarize"


@pytest.mark.parametrize(
    ("granted", "subscriptions", "expected"),
    [
        (scopes(), None, allow((), "protocol")),
        (scopes(), [], allow((), "protocol")),
        (
            scopes("resources:read"),
            ["file:///public/a"],
            allow(("resources:read",), PUBLIC),
        ),
        (
            scopes("resources:read"),
            ["file:///public/a", "file:///public/keys/k", "file:///public/b"],
            step_up(("resources:read", "admin"), f"{PUBLIC}+{KEYS}"),
        ),
        (scopes("admin"), ["file:///public/keys/k", "file:///public/../x"], deny("ambiguous_uri")),
        (scopes("admin"), "file:///public/a", deny("malformed")),
        (scopes("admin"), [3], deny("malformed")),
    ],
)
def test_a_listen_stream_needs_every_subscribed_resource(
    granted: frozenset[str], subscriptions: object, expected: Decision
) -> None:
    notifications: dict[str, object] = {"toolsListChanged": True}
    if subscriptions is not None:
        notifications["resourceSubscriptions"] = subscriptions
    assert EVERYTHING.decide_request(granted, "subscriptions/listen", {"notifications": notifications}) == expected


def test_a_listen_stream_with_no_filter_or_a_malformed_one() -> None:
    assert EVERYTHING.decide_request(scopes(), "subscriptions/listen", {}) == allow((), "protocol")
    assert EVERYTHING.decide_request(scopes(), "subscriptions/listen", {"notifications": 1}).rule == "malformed"
    assert EVERYTHING.decide(scopes(), "subscriptions/listen", None).rule == "protocol"
    assert EVERYTHING.decide(scopes(), "subscriptions/listen", "file:///public/a").kind == "step_up"


@pytest.mark.parametrize(
    ("server_requests", "method", "allowed"),
    [
        (None, "sampling/createMessage", True),
        (None, "elicitation/create", True),
        (None, "roots/list", True),
        (["sampling"], "sampling/createMessage", True),
        (["sampling"], "elicitation/create", False),
        (["sampling"], "roots/list", False),
        ([], "sampling/createMessage", False),
        ([], "ping", True),
        (None, "tasks/get", False),
        (None, "sampling/createmessage", False),
        (None, "tools/call", False),
    ],
)
def test_server_requests_are_relayed_only_when_configured(
    server_requests: list[str] | None, method: str, allowed: bool
) -> None:
    fields: dict[str, Any] = {} if server_requests is None else {"server_requests": server_requests}
    server_policy = policy(**fields)
    assert server_policy.allows_server_request(method) is allowed
    decision = server_policy.decide_server_request(method)
    assert decision.kind == ("allow" if allowed else "deny")
    if method in ("sampling/createMessage", "elicitation/create", "roots/list"):
        assert decision.rule == "server_requests"


def test_the_policy_exposes_the_default_scopes_for_401_challenges() -> None:
    assert EVERYTHING.default_scopes == ("tools:call",)
    assert STRICT.default_scopes is None
    assert policy(default_scopes=["x", "x"]).default_scopes == ("x",)


# -- properties ------------------------------------------------------------------------------------

_SCOPES = ["a", "b", "c", "admin", "ADMIN", "admin2"]
_NAMES = ["t1", "t2", "t3"]
_URIS = ["file:///", "file:///p/", "file:///p/q/"]
_scope_lists = st.lists(st.sampled_from(_SCOPES), max_size=3)


@st.composite
def _policies(draw: st.DrawFn) -> ServerPolicy:
    return policy(
        draw(st.dictionaries(st.sampled_from(_SCOPES), _scope_lists, max_size=3)),
        tool_scopes=draw(st.dictionaries(st.sampled_from(_NAMES), _scope_lists, max_size=3)),
        prompt_scopes=draw(st.dictionaries(st.sampled_from(_NAMES), _scope_lists, max_size=3)),
        resource_scopes=draw(st.dictionaries(st.sampled_from(_URIS), _scope_lists, max_size=3)),
        default_scopes=draw(st.none() | _scope_lists),
    )


_operations = st.one_of(
    st.tuples(st.just("tools/call"), st.sampled_from(_NAMES)),
    st.tuples(st.just("prompts/get"), st.sampled_from(_NAMES)),
    st.tuples(st.just("resources/read"), st.sampled_from(["file:///x", "file:///p/x", "file:///p/q/x", "mem://x"])),
)


@given(
    server_policy=_policies(),
    operation=_operations,
    granted=st.frozensets(st.sampled_from(_SCOPES)),
    extra=st.frozensets(st.sampled_from(_SCOPES)),
)
def test_more_scopes_never_make_a_decision_worse(
    server_policy: ServerPolicy, operation: tuple[str, str], granted: frozenset[str], extra: frozenset[str]
) -> None:
    method, name = operation
    before = server_policy.decide(granted, method, name)
    after = server_policy.decide(granted | extra, method, name)
    rank = {"deny": 0, "step_up": 1, "allow": 2}
    assert rank[after.kind] >= rank[before.kind]
    assert (before.kind == "deny") == (after.kind == "deny")  # denial never depends on the token
    assert after.rule == before.rule and after.scopes_required == before.scopes_required


@given(server_policy=_policies(), operation=_operations, granted=st.frozensets(st.sampled_from(_SCOPES)))
def test_a_token_granted_the_challenged_scopes_is_allowed(
    server_policy: ServerPolicy, operation: tuple[str, str], granted: frozenset[str]
) -> None:
    method, name = operation
    decision = server_policy.decide(granted, method, name)
    if decision.kind == "step_up":
        assert decision.scopes_required
        assert server_policy.decide(frozenset(decision.scopes_required), method, name).kind == "allow"


@pytest.mark.parametrize(
    ("method", "name", "ref_type"),
    [
        ("completion/complete", "summarize", None),
        ("completion/complete", "summarize", "ref/tool"),
        ("completion/complete", None, "ref/resource"),
        ("tools/call", None, None),
        ("prompts/get", None, None),
        ("resources/read", None, None),
    ],
)
def test_decide_without_the_name_it_needs_denies_as_malformed(
    method: str, name: str | None, ref_type: str | None
) -> None:
    assert EVERYTHING.decide(scopes("admin"), method, name, ref_type=ref_type) == deny("malformed")
