"""The verified tool catalogue of one upstream: pinned definitions in, drifted or new ones quarantined."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mcp_gateway.identity.tool_pins import PinCheck, check_tool
from mcp_gateway.policy.schemas import ArgumentSchema

_MAX_REPORTED = 10_000  # distinct (tool, hash) quarantine reports kept to deduplicate events
# How often a call naming a tool the catalogue has not seen may make the gateway list the upstream's tools
# again: a flood of made-up names costs the upstream one tools/list per interval, not one per call.
RELIST_SECONDS = 10.0

ToolStatus = Literal["unseen", "unknown", "unpinned", "drifted", "broken", "pinned"]


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    """What the catalogue knows about one tool name, and the compiled schema of a pinned one."""

    status: ToolStatus
    schema: ArgumentSchema | None = None

    @property
    def quarantine_reason(self) -> str | None:
        return _REASONS.get(self.status)


_REASONS = {
    "unpinned": "it is not pinned in the allowlist",
    "drifted": "its definition changed since it was pinned",
    "broken": "its pinned input schema is not a valid JSON Schema",
}


class ToolCatalogue:
    """Tracks what the upstream presents against `tools_sha256` (DESIGN: rug pulls, typosquats).

    A tool whose definition drifts from its pin — a new description, an added parameter — or that
    has no pin at all is quarantined: hidden from `tools/list` and refused on `tools/call` until an
    admin re-pins it. Each distinct drift is reported once, with both hashes, for the audit log. A name
    the upstream does not present at all is unknown, and is refused the way the upstream refuses it.
    The `inputSchema` of each pinned definition is compiled once, when it is first presented.
    """

    def __init__(self, pins: Mapping[str, str], *, strict_arguments: bool = False) -> None:
        self.pins = dict(pins)
        self.strict_arguments = strict_arguments
        self._presented: dict[str, str] = {}  # tool → hash last presented in a tools/list
        self._schemas: dict[str, ArgumentSchema | None] = {}  # pinned tool → its compiled inputSchema
        self._reported: set[tuple[str, str]] = set()
        self.pending: list[PinCheck] = []  # quarantine events not yet written to the audit log
        self.listed = False  # a whole tools/list (its last page) has been seen
        self.listed_at: float | None = None  # monotonic time of the gateway's own last listing
        self.listing_lock = asyncio.Lock()  # one listing of the upstream's tools at a time

    def filter_tools(self, tools: Any, *, complete: bool = True) -> Any:
        """Keep only tools whose definition matches its pin; note every other one.

        `complete`: this page ends the listing (no `nextCursor`), so a name not presented is unknown.
        """
        if not isinstance(tools, list):
            return tools
        kept = []
        for tool in tools:
            check = check_tool(tool, self.pins) if isinstance(tool, dict) else None
            if check is None:
                continue  # malformed: no name, or not canonicalisable
            self._presented[check.name] = check.presented
            if check.status == "pinned":
                if check.name not in self._schemas:
                    self._schemas[check.name] = self._compile(tool.get("inputSchema"))
                kept.append(tool)
            elif (check.name, check.presented) not in self._reported and len(self._reported) < _MAX_REPORTED:
                self._reported.add((check.name, check.presented))
                self.pending.append(check)
        self.listed = self.listed or complete
        return kept

    def _compile(self, schema: Any) -> ArgumentSchema | None:
        # The schema hashed into the pin is the one compiled: a pinned definition has exactly one schema.
        try:
            return ArgumentSchema(schema, strict=self.strict_arguments)
        except ValueError:
            return None

    def verdict(self, name: str) -> ToolVerdict:
        """What a call to `name` meets: forwarded only when `pinned` (and its arguments validate)."""
        presented = self._presented.get(name)
        if presented is None:
            return ToolVerdict("unknown" if self.listed else "unseen")
        expected = self.pins.get(name)
        if expected is None:
            return ToolVerdict("unpinned")
        if presented != expected:
            return ToolVerdict("drifted")
        schema = self._schemas.get(name)
        return ToolVerdict("pinned", schema) if schema is not None else ToolVerdict("broken")

    def needs_listing(self, name: str, now: float) -> bool:
        """Whether to list the upstream's tools before judging a call to `name` (never listed, or a name not
        presented in the last listing and the last one the gateway made is older than RELIST_SECONDS)."""
        if not self.listed:
            return True
        if name in self._presented:
            return False
        return self.listed_at is None or now - self.listed_at >= RELIST_SECONDS

    def quarantined(self, name: str) -> str | None:
        """Why a call to `name` is refused, or None when it may be forwarded (unknown names included)."""
        return self.verdict(name).quarantine_reason

    def take_pending(self) -> list[PinCheck]:
        pending, self.pending = self.pending, []
        return pending
