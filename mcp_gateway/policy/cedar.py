"""Argument-level rules in Cedar, after the scope rules: `[policy] cedar` enforced, `shadow_cedar` only recorded.

The scope rules stay the first gate: a step-up or a deny from them stands, and Cedar never turns it into an
allow. A call the scope rules allow is then judged by Cedar only if some policy's scope (its principal,
action and resource constraints) targets it; every other call pays nothing. For a targeted call:

* a satisfied `forbid` refuses it (`forbid` wins), rule `cedar:<@id>`;
* if some `permit` targets it, one of them must hold, else it is refused naming those permits: a permit
  states the condition under which its target may be called;
* a call targeted only by forbids, none of which holds, keeps the scope rules' allow;
* a policy that cannot be evaluated (an argument of the wrong type, an overflow) refuses the call naming
  it. Cedar itself skips an erroring policy, which for a `forbid` would mean allowing: fail closed instead.

A Cedar refusal is a deny, never a step-up: no scope would help. The entity model is `schema.cedarschema`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cedarpy

from mcp_gateway.policy.cedar_source import CedarSource, load_cedar_source
from mcp_gateway.policy.decider import Decider, DecisionInput
from mcp_gateway.policy.decision import Decision

if TYPE_CHECKING:
    pass

__all__ = ["ACTIONS", "ArgumentsCheck", "CedarDecider", "CedarPolicies", "cedar_request"]

# Method → (Cedar resource type, noun for a refusal's message).
ACTIONS: Final[Mapping[str, tuple[str, str]]] = {
    "tools/call": ("Tool", "Tool"),
    "resources/read": ("Resource", "Resource"),
    "prompts/get": ("Prompt", "Prompt"),
}
_ERRORED: Final = re.compile(r"policy `([^`]+)`")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

# A check of a call's arguments that runs between the scope rules and Cedar (the pinned input schemas):
# (server, tool, arguments) → why they are refused, or None. Optional until `policy/schemas.py` lands.
ArgumentsCheck = Callable[[str, str, Any], "str | None"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Scope:
    """One policy's scope, as a pure predicate over (principal uid, action id, resource type, resource uid)."""

    policy: str  # Cedar's positional id
    permit: bool
    principals: frozenset[str] | None  # None: any
    actions: frozenset[str] | None
    resource_type: str | None
    resources: frozenset[str] | None
    reads_arguments: bool

    def targets(self, principal: str, action: str, resource_type: str, resource: str) -> bool:
        return (
            (self.actions is None or action in self.actions)
            and (self.resource_type is None or self.resource_type == resource_type)
            and (self.resources is None or resource in self.resources)
            and (self.principals is None or principal in self.principals)
        )


def _uids(constraint: Mapping[str, Any], kind: str) -> tuple[frozenset[str] | None, str | None]:
    """(ids, entity type) a scope constraint admits; no entity has parents in this model, so `in` is `==`."""
    op = constraint.get("op")
    if op == "All":
        return None, None
    if op == "is":
        inner = constraint.get("in")
        ids = None if inner is None else frozenset([str(inner["entity"]["id"])])
        return ids, str(constraint["entity_type"])
    entities = constraint.get("entities") or [constraint["entity"]]
    types = {str(e["type"]) for e in entities}
    return frozenset(str(e["id"]) for e in entities), (types.pop() if len(types) == 1 and kind != "action" else None)


def _reads_arguments(node: object) -> bool:
    """Whether an EST expression may read `context.arguments` (any use of `context` but another attribute)."""
    if isinstance(node, dict):
        for key in (".", "has"):
            access = node.get(key)
            if isinstance(access, dict) and access.get("left") == {"Var": "context"}:
                return access.get("attr") == "arguments"
        if node.get("Var") == "context":
            return True
        return any(_reads_arguments(value) for value in node.values())
    if isinstance(node, list):
        return any(_reads_arguments(value) for value in node)
    return False


class CedarPolicies:
    """One policy file, parsed and validated once; `judge` is pure."""

    __slots__ = ("ids", "name", "policy_set", "scopes")

    def __init__(self, source: CedarSource, name: str) -> None:
        self.name = name  # "cedar" or "shadow_cedar", for messages
        self.policy_set = source.policy_set
        self.ids = source.ids
        scopes = []
        for positional, est in source.policies.items():
            principals, _ = _uids(est["principal"], "principal")
            actions, _ = _uids(est["action"], "action")
            resources, resource_type = _uids(est["resource"], "resource")
            scopes.append(
                _Scope(
                    positional,
                    est["effect"] == "permit",
                    principals,
                    actions,
                    resource_type,
                    resources,
                    _reads_arguments(est.get("conditions", [])),
                )
            )
        self.scopes: tuple[_Scope, ...] = tuple(scopes)

    @classmethod
    def load(cls, path: Path, name: str = "cedar") -> CedarPolicies:
        source, _ = load_cedar_source(path)
        return cls(source, name)

    def targeting(self, request: DecisionInput) -> list[_Scope]:
        """The policies whose scope matches this call (empty for a method outside the entity model)."""
        kind = ACTIONS.get(request.method)
        if kind is None or request.name is None:
            return []
        principal = request.agent_id or ""
        resource = f"{request.server}/{request.name}"
        return [s for s in self.scopes if s.targets(principal, request.method, kind[0], resource)]

    def judge(self, request: DecisionInput, allowed: Decision) -> Decision:
        """Cedar's word on a call the scope rules allowed (`allowed`)."""
        targeting = self.targeting(request)
        if not targeting:
            return allowed
        result = cedarpy.is_authorized(cedar_request(request), self.policy_set, _entities(request))
        noun = ACTIONS[request.method][1]
        errors = result.diagnostics.errors
        if errors:
            match = _ERRORED.search(errors[0])
            failed = self.ids.get(match.group(1), match.group(1)) if match else "?"
            why = f"{noun} {request.name!r} is refused: policy {failed!r} cannot be evaluated for this call"
            return self._deny(allowed, [failed], why)
        fired = [self.ids.get(p, p) for p in result.diagnostics.reasons]
        if result.allowed:
            return dataclasses.replace(allowed, rule=f"{allowed.rule}+cedar:{'+'.join(fired)}")
        if fired:
            return self._deny(allowed, fired, f"{noun} {request.name!r} is refused by policy {fired[0]!r}")
        permits = [self.ids[s.policy] for s in targeting if s.permit]
        if not permits:
            return allowed  # only forbids target it, and none holds
        return self._deny(allowed, permits, f"{noun} {request.name!r} is not permitted by policy {permits[0]!r}")

    @staticmethod
    def _deny(allowed: Decision, ids: list[str], reason: str) -> Decision:
        return Decision("deny", allowed.scopes_required, "cedar:" + "+".join(ids), reason)


def cedar_request(request: DecisionInput) -> dict[str, Any]:
    """The Cedar request (principal, action, resource, context) for a call of the entity model."""
    resource_type = ACTIONS[request.method][0]
    context: dict[str, Any] = {
        "arguments": _value(request.arguments) if isinstance(request.arguments, Mapping) else {},
        "now": int(request.now),
    }
    if request.request_context is not None:
        context["request_context"] = request.request_context
    if request.era is not None:
        context["era"] = request.era
    if request.client_address is not None:
        # Not an IP address (a Unix socket): absent, so `context has client_address` is false.
        with contextlib.suppress(ValueError):
            address = str(ipaddress.ip_address(request.client_address))
            context["client_address"] = {"__extn": {"fn": "ip", "arg": address}}
    return {
        "principal": {"type": "Agent", "id": request.agent_id or ""},
        "action": {"type": "Action", "id": request.method},
        "resource": {"type": resource_type, "id": f"{request.server}/{request.name}"},
        "context": context,
    }


def _entities(request: DecisionInput) -> list[dict[str, Any]]:
    attrs: dict[str, Any] = {"scopes": sorted(request.scopes)}
    if request.delegating_user is not None:
        attrs["user"] = request.delegating_user
    if request.issuer is not None:
        attrs["issuer"] = request.issuer
    resource_type = ACTIONS[request.method][0]
    named = "uri" if resource_type == "Resource" else "name"
    return [
        {"uid": {"type": "Agent", "id": request.agent_id or ""}, "attrs": attrs, "parents": []},
        {
            "uid": {"type": resource_type, "id": f"{request.server}/{request.name}"},
            "attrs": {"server": request.server, named: request.name},
            "parents": [],
        },
    ]


def _value(value: Any) -> Any:
    """A JSON value as Cedar reads it: integers are Longs, other numbers decimals (so comparing them with a
    Long is an evaluation error, which refuses the call, never a silently absent attribute)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _LONG_MIN <= value <= _LONG_MAX else str(value)
    if isinstance(value, float):
        if value.is_integer() and _LONG_MIN <= value <= _LONG_MAX:
            return int(value)
        return {"__extn": {"fn": "decimal", "arg": format(Decimal(repr(value)).quantize(Decimal("0.0001")), "f")}}
    if isinstance(value, Mapping):
        return {str(k): _value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    return str(value)  # None: Cedar has no null


class CedarDecider:
    """The scope rules, then the enforced Cedar policies; a shadow set judged beside and only recorded."""

    __slots__ = ("arguments_check", "policies", "scopes", "shadow")

    def __init__(
        self,
        scopes: Decider,
        policies: CedarPolicies | None,
        shadow: CedarPolicies | None = None,
        *,
        arguments_check: ArgumentsCheck | None = None,
    ) -> None:
        self.scopes = scopes
        self.policies = policies
        self.shadow = shadow
        self.arguments_check = arguments_check

    def decide(self, request: DecisionInput) -> Decision:
        allowed = self.scopes.decide(request)
        if allowed.kind != "allow" or request.method not in ACTIONS:
            return allowed
        check = self.arguments_check
        if check is not None and request.method == "tools/call" and request.name is not None:
            why = check(request.server, request.name, request.arguments)
            if why is not None:
                return Decision("deny", allowed.scopes_required, "input_schema", why)
        enforced = allowed if self.policies is None else self.policies.judge(request, allowed)
        if self.shadow is not None:
            candidate = self.shadow.judge(request, allowed)
            if candidate.kind != enforced.kind:
                return dataclasses.replace(enforced, shadow=f"{candidate.kind}:{candidate.rule}")
        return enforced
