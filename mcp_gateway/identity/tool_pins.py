"""Tool-definition pins: what a tool's definition hashes to, and whether it drifted from its pin."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import rfc8785

# DESIGN: the pinned view of a tool keeps only these keys, as sent on the wire (camelCase).
PINNED_KEYS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def tool_sha256(tool: Mapping[str, Any]) -> str:
    """Lowercase hex SHA-256 of the RFC 8785 canonical JSON of the tool's pinned keys (absent stay absent)."""
    view = {key: tool[key] for key in PINNED_KEYS if key in tool}
    return hashlib.sha256(rfc8785.dumps(view)).hexdigest()


PinStatus = Literal["pinned", "unpinned", "drifted"]


@dataclass(frozen=True, slots=True)
class PinCheck:
    """One tool's definition judged against the allowlist: `pinned` ones may be listed and called."""

    name: str
    status: PinStatus
    expected: str | None
    presented: str


def check_tool(tool: Mapping[str, Any], pins: Mapping[str, str]) -> PinCheck | None:
    """Judge one tool object; None when it has no usable name or cannot be canonicalised (malformed)."""
    name = tool.get("name")
    if not isinstance(name, str):
        return None
    try:
        presented = tool_sha256(tool)
    except (TypeError, ValueError, OverflowError):
        return None
    expected = pins.get(name)
    if expected is None:
        return PinCheck(name, "unpinned", None, presented)
    return PinCheck(name, "pinned" if expected == presented else "drifted", expected, presented)
