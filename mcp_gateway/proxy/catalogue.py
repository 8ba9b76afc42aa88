"""The verified tool catalogue of one upstream: pinned definitions in, drifted or new ones quarantined."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_gateway.identity.tool_pins import PinCheck, check_tool

_MAX_REPORTED = 10_000  # distinct (tool, hash) quarantine reports kept to deduplicate events


class ToolCatalogue:
    """Tracks what the upstream presents against `tools_sha256` (DESIGN: rug pulls, typosquats).

    A tool whose definition drifts from its pin — a new description, an added parameter — or that
    has no pin at all is quarantined: hidden from `tools/list` and refused on `tools/call` until an
    admin re-pins it. Each distinct drift is reported once, with both hashes, for the audit log.
    """

    def __init__(self, pins: Mapping[str, str]) -> None:
        self.pins = dict(pins)
        self._presented: dict[str, str] = {}  # tool → hash last presented in a tools/list
        self._reported: set[tuple[str, str]] = set()
        self.pending: list[PinCheck] = []  # quarantine events not yet written to the audit log

    def filter_tools(self, tools: Any) -> Any:
        """Keep only tools whose definition matches its pin; note every other one."""
        if not isinstance(tools, list):
            return tools
        kept = []
        for tool in tools:
            check = check_tool(tool, self.pins) if isinstance(tool, dict) else None
            if check is None:
                continue  # malformed: no name, or not canonicalisable
            self._presented[check.name] = check.presented
            if check.status == "pinned":
                kept.append(tool)
            elif (check.name, check.presented) not in self._reported and len(self._reported) < _MAX_REPORTED:
                self._reported.add((check.name, check.presented))
                self.pending.append(check)
        return kept

    def quarantined(self, name: str) -> str | None:
        """Why a call to `name` is refused, or None when it may be forwarded."""
        expected = self.pins.get(name)
        if expected is None:
            return "it is not pinned in the allowlist"
        presented = self._presented.get(name)
        if presented is not None and presented != expected:
            return "its definition changed since it was pinned"
        return None

    def take_pending(self) -> list[PinCheck]:
        pending, self.pending = self.pending, []
        return pending
