"""`policy test` cases: example calls with the decision an admin expects, like `opa test`.

[[case]]
name = "a transfer above 100 is refused"
agent = "agent-a"                    # principal: Agent::"agent-a"
user = "alice"                       # optional: principal.user (the delegating user)
scopes = ["tools:call"]
server = "bank"
tool = "transfer"                    # or resource = "file:///...", or prompt = "..."
arguments = { amount = 150 }
context = { now = "2026-12-01T10:00:00Z", client_address = "10.0.0.7" }   # all optional
expect = "deny"                      # allow | step_up | deny
rule = "cedar:transfer-limit"        # optional: the deciding rule too
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mcp_gateway.errors import ConfigError
from mcp_gateway.policy.decider import DecisionInput
from mcp_gateway.policy.decision import Decision
from mcp_gateway.policy.offline import PolicyBundle

__all__ = ["Case", "CaseResult", "load_cases", "run_cases"]

_STRICT = ConfigDict(frozen=True, extra="forbid")


class CaseContext(BaseModel):
    model_config = _STRICT

    now: datetime | float | None = None  # epoch seconds or an ISO 8601 time (UTC unless it says otherwise)
    client_address: str | None = None
    era: str | None = None
    request_context: str | None = None


class Case(BaseModel):
    model_config = _STRICT

    name: str
    agent: str
    user: str | None = None
    issuer: str | None = None
    scopes: tuple[str, ...] = ()
    server: str
    tool: str | None = None
    resource: str | None = None
    prompt: str | None = None
    arguments: Mapping[str, Any] = Field(default_factory=dict)
    context: CaseContext = Field(default_factory=CaseContext)
    expect: Literal["allow", "step_up", "deny"]
    rule: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Case:
        if sum(x is not None for x in (self.tool, self.resource, self.prompt)) != 1:
            raise ValueError("name exactly one of tool, resource, prompt")
        return self

    def decision_input(self) -> DecisionInput:
        if self.tool is not None:
            method, name, params = "tools/call", self.tool, {"name": self.tool, "arguments": dict(self.arguments)}
        elif self.prompt is not None:
            method, name, params = "prompts/get", self.prompt, {"name": self.prompt, "arguments": dict(self.arguments)}
        else:
            assert self.resource is not None
            method, name, params = "resources/read", self.resource, {"uri": self.resource}
        now = self.context.now
        if isinstance(now, datetime):
            now = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
        return DecisionInput(
            server=self.server,
            method=method,
            params=params,
            scopes=frozenset(self.scopes),
            agent_id=self.agent,
            delegating_user=self.user,
            issuer=self.issuer,
            name=name,
            arguments=dict(self.arguments) if method != "resources/read" else None,
            request_context=self.context.request_context,
            era=self.context.era,
            now=float(now) if now is not None else 0.0,
            client_address=self.context.client_address,
        )


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    decision: Decision

    @property
    def passed(self) -> bool:
        return self.decision.kind == self.case.expect and (self.case.rule in (None, self.decision.rule))

    def line(self) -> str:
        got = f"{self.decision.kind} ({self.decision.rule})"
        if self.passed:
            return f"PASS  {self.case.name}: {got}"
        wanted = self.case.expect + (f" ({self.case.rule})" if self.case.rule else "")
        return f"FAIL  {self.case.name}: expected {wanted}, got {got}"


def load_cases(path: Path) -> list[Case]:
    """The `[[case]]` tables of a cases file; ConfigError naming the case and key if one is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc}") from exc
    extra = set(data) - {"case"}
    if extra:
        raise ConfigError(str(path), sorted(extra)[0], "unknown key; cases are [[case]] tables")
    raw = data.get("case", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(str(path), "case", "expected at least one [[case]] table")
    cases = []
    for index, body in enumerate(raw):
        try:
            cases.append(Case.model_validate(body))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "(case)"
            raise ConfigError(str(path), f"case[{index}].{key}", str(first["msg"])) from None
    return cases


def run_cases(cases: list[Case], policy: PolicyBundle) -> list[CaseResult]:
    """Each case decided by the same deciders the gateway runs."""
    return [CaseResult(case, policy.decide(case.decision_input())) for case in cases]
