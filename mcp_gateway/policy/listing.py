"""Filtering list results (`tools/list`, `resources/list`, ...) down to what the token may see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mcp_gateway.policy.decision import ListKind, ServerPolicy

__all__ = ["filter_list_result"]

# method → (result key holding the items, item key naming each item, what the policy judges it as)
_LISTS: Final[Mapping[str, tuple[str, str, ListKind]]] = {
    "tools/list": ("tools", "name", "tool"),
    "resources/list": ("resources", "uri", "resource"),
    # A template is judged by its literal prefix before the first `{`: `file:///public/{name}` is
    # visible where `file:///public/` would be; `file:///{path}` only where `file:///` would be.
    "resources/templates/list": ("resourceTemplates", "uriTemplate", "resource_template"),
    "prompts/list": ("prompts", "name", "prompt"),
}


def filter_list_result(
    method: str, result: Mapping[str, Any], policy: ServerPolicy, granted: frozenset[str]
) -> dict[str, Any]:
    """A copy of `result` keeping only the items `policy` shows to a token holding `granted`.

    Pure and total: items that are not objects or lack a string name are dropped, a list field of the
    wrong type becomes `[]`, and nothing raises. Other keys (`nextCursor`, `_meta`, `ttlMs`, ...) are
    copied as they are, except `cacheScope`: a filtered list depends on the token, so `"public"`
    becomes `"private"` (MCP 2026-07-28: a public result MAY be served across authorization contexts,
    which would show one principal's view to another). Methods that are not list methods come back
    as an unfiltered copy.
    """
    if not isinstance(result, Mapping):
        return {}
    out = dict(result)
    spec = _LISTS.get(method)
    if spec is None:
        return out
    field, key, kind = spec
    if field in out:
        items = out[field]
        out[field] = (
            [
                item
                for item in items
                if isinstance(item, dict)
                and isinstance(name := item.get(key), str)
                and policy.visible(granted, kind, name)
            ]
            if isinstance(items, list)
            else []
        )
    if out.get("cacheScope") == "public":
        out["cacheScope"] = "private"
    return out
