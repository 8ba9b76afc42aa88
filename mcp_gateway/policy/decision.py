"""Per-operation policy decisions: allow, step up (403 insufficient_scope) or deny, compiled once per server.

Which methods are governed, and by what:

=========================================  =============================================================
`tools/call`                               `tool_scopes[name]`, else `default_scopes`, else deny
`resources/read`, `resources/subscribe`    `resource_scopes` (longest prefix of the URI), else default
`subscriptions/listen` (2026-07-28)        every URI in `notifications.resourceSubscriptions`, as read
`prompts/get`                              `prompt_scopes[name]`, else default
`completion/complete`                      its `ref`: a prompt as `prompts/get`, a resource template by
                                           its literal prefix (completions leak what the ref exposes)
`initialize`, `ping`, `*/list`,            allowed ("protocol"): they carry no name to judge, and list
`logging/setLevel`, `server/discover`,     results are filtered item by item (`listing.py`);
`resources/unsubscribe`, `notifications/*` giving a subscription up never needs privilege
anything else, `tasks/*` included          denied ("unknown_method"): the upstream sees one gateway
                                           credential for every principal, so a task id cannot be bound
                                           to who created it until the proxy does that itself
=========================================  =============================================================

Rule names (recorded as the audit record's `policy_rule`): `tool_scopes.NAME`, `prompt_scopes.NAME`,
`resource_scopes[PREFIX]`, `default_scopes`, `no_rule`, `protocol`, `server_requests`,
`unknown_method`, `malformed`, `ambiguous_uri`; several URIs in one request join theirs with `+`.

A Decision's `scopes_required` is the matched rule's configured scopes for every kind (the audit
record's `scopes_required`); for `step_up` it is also exactly the 403 challenge's `scope`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from mcp_gateway.config import ServerEntry
from mcp_gateway.policy.resources import AMBIGUOUS, ResourceRules, template_literal_prefix
from mcp_gateway.policy.scopes import ScopeHierarchy

__all__ = ["Decision", "DecisionKind", "ListKind", "ServerPolicy"]

DecisionKind = Literal["allow", "step_up", "deny"]
ListKind = Literal["tool", "resource", "resource_template", "prompt"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one operation, and which rule said it."""

    kind: DecisionKind
    scopes_required: tuple[str, ...]
    rule: str
    reason: str | None = None  # a refusal's message for the client, when the rule needs its own wording
    shadow: str | None = None  # "KIND:RULE" of a shadow policy that disagrees (audit `shadow_decision`)


_PROTOCOL: Final = Decision("allow", (), "protocol")
_NO_RULE: Final = Decision("deny", (), "no_rule")
_UNKNOWN_METHOD: Final = Decision("deny", (), "unknown_method")
_MALFORMED: Final = Decision("deny", (), "malformed")
_AMBIGUOUS_URI: Final = Decision("deny", (), "ambiguous_uri")
_SERVER_REQUEST_ALLOWED: Final = Decision("allow", (), "server_requests")
_SERVER_REQUEST_REFUSED: Final = Decision("deny", (), "server_requests")

_PROTOCOL_METHODS: Final = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "logging/setLevel",
        "server/discover",
        "resources/unsubscribe",
    }
)
_RESOURCE_METHODS: Final = frozenset({"resources/read", "resources/subscribe", "subscriptions/listen"})
# Server-to-client requests, by the `server_requests` name that relays them.
_SERVER_REQUESTS: Final[Mapping[str, str]] = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


@dataclass(frozen=True, slots=True)
class _Rule:
    """One configured scope list, with its two possible outcomes built in advance."""

    holders: tuple[frozenset[str], ...]  # per required scope: the scopes that grant it
    allow: Decision
    step_up: Decision

    @classmethod
    def compile(cls, name: str, scopes: tuple[str, ...], hierarchy: ScopeHierarchy) -> _Rule:
        required = hierarchy.minimal_challenge(scopes)
        return cls(
            holders=tuple(hierarchy.holders_of(scope) for scope in required),
            allow=Decision("allow", required, name),
            step_up=Decision("step_up", required, name),
        )

    def judge(self, granted: frozenset[str]) -> Decision:
        for holders in self.holders:
            if granted.isdisjoint(holders):
                return self.step_up
        return self.allow  # `echo = []` has no holders: any authenticated principal


class ServerPolicy:
    """One allowlist entry's scope rules, compiled once; every method is pure and reads no clock."""

    __slots__ = ("_default", "_prompts", "_resources", "_server_requests", "_tools", "default_scopes", "hide_step_up")

    def __init__(self, entry: ServerEntry, hierarchy: ScopeHierarchy) -> None:
        self._tools = {
            name: _Rule.compile(f"tool_scopes.{name}", s, hierarchy) for name, s in entry.tool_scopes.items()
        }
        self._prompts = {
            name: _Rule.compile(f"prompt_scopes.{name}", s, hierarchy) for name, s in entry.prompt_scopes.items()
        }
        self._resources: ResourceRules[_Rule] = ResourceRules(
            {
                prefix: _Rule.compile(f"resource_scopes[{prefix}]", s, hierarchy)
                for prefix, s in entry.resource_scopes.items()
            }
        )
        self._default = (
            None if entry.default_scopes is None else _Rule.compile("default_scopes", entry.default_scopes, hierarchy)
        )
        self._server_requests = frozenset(entry.server_requests)
        self.default_scopes: tuple[str, ...] | None = (
            None if entry.default_scopes is None else hierarchy.minimal_challenge(entry.default_scopes)
        )
        self.hide_step_up = entry.hide_step_up

    @classmethod
    def from_entry(cls, entry: ServerEntry, hierarchy: ScopeHierarchy) -> ServerPolicy:
        return cls(entry, hierarchy)

    # -- client-to-server requests ---------------------------------------------------------------

    def decide(
        self,
        granted: frozenset[str],
        method: str,
        name: str | None,
        *,
        ref_type: str | None = None,
    ) -> Decision:
        """Judge one operation. `name` is the tool or prompt name, or the resource URI.

        For `completion/complete`, `name` is the ref's prompt name or URI template and `ref_type` its
        `type` (`ref/prompt` or `ref/resource`); for `subscriptions/listen`, one subscribed URI (or None
        when the stream subscribes to no resource). `granted` is the token's scopes as issued; the
        hierarchy is applied here.
        """
        if method == "tools/call":
            return self._named(self._tools, name, granted)
        if method in _RESOURCE_METHODS:
            if name is None and method == "subscriptions/listen":
                return _PROTOCOL
            return self._resource(name, granted)
        if method == "prompts/get":
            return self._named(self._prompts, name, granted)
        if method == "completion/complete":
            if ref_type == "ref/prompt":
                return self._named(self._prompts, name, granted)
            if ref_type == "ref/resource" and isinstance(name, str):
                return self._resource(template_literal_prefix(name), granted)
            return _MALFORMED
        if method in _PROTOCOL_METHODS or method.startswith("notifications/"):
            return _PROTOCOL
        return _UNKNOWN_METHOD

    def decide_request(self, granted: frozenset[str], method: str, params: object) -> Decision:
        """Judge a JSON-RPC request by its `params` as received; wrong shapes are denied, never raised."""
        p = params if isinstance(params, Mapping) else {}
        if method in ("tools/call", "prompts/get"):
            return self._named(self._tools if method == "tools/call" else self._prompts, p.get("name"), granted)
        if method in ("resources/read", "resources/subscribe"):
            return self._resource(p.get("uri"), granted)
        if method == "completion/complete":
            ref = p.get("ref")
            if not isinstance(ref, Mapping):
                return _MALFORMED
            ref_type = ref.get("type")
            target = ref.get("name") if ref_type == "ref/prompt" else ref.get("uri")
            if not isinstance(target, str) or not isinstance(ref_type, str):
                return _MALFORMED
            return self.decide(granted, method, target, ref_type=ref_type)
        if method == "subscriptions/listen":
            return self._listen(p.get("notifications"), granted)
        return self.decide(granted, method, None)

    # -- list filtering --------------------------------------------------------------------------

    def visible(self, granted: frozenset[str], kind: ListKind, name: str) -> bool:
        """Whether a list entry is shown: allowed now, or reachable by step-up unless `hide_step_up`."""
        if kind == "tool":
            decision = self._named(self._tools, name, granted)
        elif kind == "prompt":
            decision = self._named(self._prompts, name, granted)
        elif kind == "resource":
            decision = self._resource(name, granted)
        else:
            decision = self._resource(template_literal_prefix(name), granted)
        if decision.kind == "allow":
            return True
        return decision.kind == "step_up" and not self.hide_step_up

    # -- server-to-client requests ---------------------------------------------------------------

    def decide_server_request(self, method: str) -> Decision:
        """Whether an upstream may ask the client `method` (sampling, elicitation, roots, ping)."""
        if method == "ping":
            return _PROTOCOL
        relay = _SERVER_REQUESTS.get(method)
        if relay is None:
            return _UNKNOWN_METHOD
        return _SERVER_REQUEST_ALLOWED if relay in self._server_requests else _SERVER_REQUEST_REFUSED

    def allows_server_request(self, method: str) -> bool:
        return self.decide_server_request(method).kind == "allow"

    # -- internals -------------------------------------------------------------------------------

    def _named(self, table: Mapping[str, _Rule], name: object, granted: frozenset[str]) -> Decision:
        if not isinstance(name, str):
            return _MALFORMED
        rule = table.get(name)
        if rule is None:
            rule = self._default
            if rule is None:
                return _NO_RULE
        return rule.judge(granted)

    def _resource(self, uri: object, granted: frozenset[str]) -> Decision:
        if not isinstance(uri, str):
            return _MALFORMED
        rule = self._resources.match(uri)
        if rule is AMBIGUOUS:
            return _AMBIGUOUS_URI
        if rule is None:
            rule = self._default
            if rule is None:
                return _NO_RULE
        return rule.judge(granted)

    def _listen(self, notifications: object, granted: frozenset[str]) -> Decision:
        if notifications is None:
            return _PROTOCOL
        if not isinstance(notifications, Mapping):
            return _MALFORMED
        uris = notifications.get("resourceSubscriptions")
        if uris is None:
            return _PROTOCOL
        if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
            return _MALFORMED
        decisions = [self._resource(uri, granted) for uri in uris]
        if not decisions:
            return _PROTOCOL
        for decision in decisions:
            if decision.kind == "deny":
                return decision
        kind: DecisionKind = "step_up" if any(d.kind == "step_up" for d in decisions) else "allow"
        # The operation needs every subscribed URI's scopes, so the challenge is their union.
        required = tuple(dict.fromkeys(scope for d in decisions for scope in d.scopes_required))
        rule = "+".join(dict.fromkeys(d.rule for d in decisions))
        return Decision(kind, required, rule)
