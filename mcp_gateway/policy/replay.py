"""What-if replay: re-decide recorded calls under a candidate policy and list those whose decision changes.

A recorded call becomes the `DecisionInput` the live path built (`decision_input_from_row`), minus what the
audit does not keep: the protocol era and the token's issuer. A call whose arguments were not stored
(`[audit] store_arguments = false`), or stored with redacted values, is *undecidable* when the candidate
would read them (the scope rules allow it and a Cedar policy reading `context.arguments`, or the arguments
check, judges it): it is counted, never guessed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from mcp_gateway.audit.record import REDACTED
from mcp_gateway.policy.decider import DecisionInput
from mcp_gateway.policy.offline import PolicyBundle

__all__ = ["Change", "ReplayReport", "decision_input_from_row", "render", "replay"]

_JUDGED: Final = frozenset({"tools/call", "resources/read", "prompts/get"})
# Refusals decided after the policy (the pinned catalogue, the input schemas): a candidate that allows the
# call leaves them standing, unless the candidate judges the input schemas itself (`policy replay --tools`).
_AFTER_POLICY: Final = frozenset({"tools_sha256", "input_schema"})
_AFTER_POLICY_WITH_SCHEMAS: Final = frozenset({"tools_sha256"})


def decision_input_from_row(row: Mapping[str, Any]) -> tuple[DecisionInput, bool]:
    """A recorded call (an `audit query` row) as the decision input it was judged with, and whether its
    arguments are known (stored, nothing redacted)."""
    method, name = row["method"], row["tool"]
    stored = row.get("arguments")
    arguments = json.loads(stored) if stored is not None else None
    known = row.get("arguments_sha256") is None or (stored is not None and REDACTED not in stored)
    if method == "resources/read":
        params: dict[str, Any] = {"uri": name}
    else:
        params = {"name": name, "arguments": arguments}
    return (
        DecisionInput(
            server=row["mcp_server"],
            method=method,
            params=params,
            scopes=frozenset(row.get("scope_granted") or ()),
            agent_id=row.get("agent_id"),
            delegating_user=row.get("delegating_user"),
            name=name,
            arguments=arguments,
            request_context=row.get("request_context"),
            now=_epoch(row["timestamp"]),
            client_address=row.get("client_address"),
        ),
        known,
    )


def _epoch(timestamp: str | float) -> float:
    if isinstance(timestamp, int | float):
        return float(timestamp)
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Change:
    """Calls of one agent to one tool whose decision changes the same way under the same rule."""

    was: str
    becomes: str
    rule: str
    agent: str
    server: str
    tool: str
    event_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "was": self.was,
            "becomes": self.becomes,
            "rule": self.rule,
            "agent": self.agent,
            "server": self.server,
            "tool": self.tool,
            "calls": len(self.event_ids),
            "event_ids": self.event_ids,
        }


@dataclass
class ReplayReport:
    decided: int = 0
    unchanged: int = 0
    changes: list[Change] = field(default_factory=list)
    undecidable: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (agent, server, tool) → calls
    skipped: int = 0  # rows that are not judged calls: unauthenticated refusals, events, other methods

    @property
    def changed(self) -> int:
        return sum(len(c.event_ids) for c in self.changes)

    def summary(self) -> dict[str, int]:
        return {
            "decided": self.decided,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "undecidable": sum(self.undecidable.values()),
            "skipped": self.skipped,
        }


def replay(rows: Iterable[Mapping[str, Any]], candidate: PolicyBundle) -> ReplayReport:
    """Re-decide every judged call in `rows` under `candidate`; changes grouped by rule, agent and tool."""
    report = ReplayReport()
    groups: dict[tuple[str, str, str, str, str, str], Change] = {}
    after_policy = _AFTER_POLICY if candidate.arguments_check is None else _AFTER_POLICY_WITH_SCHEMAS
    for row in rows:
        was = row.get("decision")
        if row.get("method") not in _JUDGED or not row.get("agent_id") or was is None or row.get("tool") is None:
            report.skipped += 1
            continue
        request, known = decision_input_from_row(row)
        if not known and candidate.reads_arguments(request):
            key = (str(request.agent_id), request.server, str(request.name))
            report.undecidable[key] = report.undecidable.get(key, 0) + 1
            continue
        report.decided += 1
        decision = candidate.decide(request)
        becomes, rule = decision.kind, decision.rule
        if row.get("policy_rule") in after_policy and becomes == "allow":
            becomes, rule = was, str(row["policy_rule"])
        if becomes == was:
            report.unchanged += 1
            continue
        group = (was, becomes, rule, str(request.agent_id), request.server, str(request.name))
        change = groups.get(group)
        if change is None:
            change = groups[group] = Change(*group)
            report.changes.append(change)
        change.event_ids.append(str(row["event_id"]))
    report.changes.sort(key=lambda c: (c.rule, c.agent, c.server, c.tool, c.was, c.becomes))
    return report


def render(report: ReplayReport, style: str) -> str:
    """The report as a table, JSON, or CSV (one line per group of changed calls)."""
    if style == "json":
        undecidable = [
            {"agent": agent, "server": server, "tool": tool, "calls": calls}
            for (agent, server, tool), calls in sorted(report.undecidable.items())
        ]
        body = {"summary": report.summary(), "changes": [c.as_dict() for c in report.changes]}
        body["undecidable"] = undecidable
        return json.dumps(body, indent=2)
    columns = ("rule", "agent", "server", "tool", "was", "becomes", "calls", "event_ids")
    rows = [
        [c.rule, c.agent, c.server, c.tool, c.was, c.becomes, str(len(c.event_ids)), " ".join(c.event_ids)]
        for c in report.changes
    ]
    if style == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    summary = report.summary()
    lines = [
        f"{summary['decided']} calls re-decided: {summary['changed']} change, {summary['unchanged']} do not; "
        f"{summary['undecidable']} undecidable (arguments not stored); {summary['skipped']} rows not judged calls"
    ]
    if rows:
        shown = [[*r[:-1], _short(r[-1])] for r in rows]
        widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(columns)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(columns, widths, strict=True)).rstrip())
        lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in shown)
    for (agent, server, tool), calls in sorted(report.undecidable.items()):
        lines.append(f"undecidable: {calls} call(s) of {agent} to {server}/{tool}")
    return "\n".join(lines)


def _short(event_ids: str) -> str:
    ids = event_ids.split()
    return " ".join(ids[:3]) + (f" (+{len(ids) - 3})" if len(ids) > 3 else "")
