"""Allowlist entries and policies for the policy tests, built the way the config loader builds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mcp_gateway.config import ServerEntry
from mcp_gateway.policy import ScopeHierarchy, ServerPolicy

ADMIN_IMPLIES = {"admin": ["tools:call", "tools:read"]}


def entry(**fields: Any) -> ServerEntry:
    return ServerEntry.model_validate({"name": "everything", "url": "http://127.0.0.1:3001/mcp", **fields})


def policy(implications: Mapping[str, Sequence[str]] | None = None, **fields: Any) -> ServerPolicy:
    return ServerPolicy.from_entry(entry(**fields), ScopeHierarchy(implications))


def scopes(*names: str) -> frozenset[str]:
    return frozenset(names)
