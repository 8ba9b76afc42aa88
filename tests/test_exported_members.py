"""The public surface is explicit: `__all__` is sorted and names exactly what the package exports."""

from __future__ import annotations

import mcp_gateway


def test_all_is_sorted_and_every_name_exists() -> None:
    assert mcp_gateway.__all__ == sorted(mcp_gateway.__all__)
    for name in mcp_gateway.__all__:
        assert hasattr(mcp_gateway, name), name


def test_every_public_attribute_is_listed_in_all() -> None:
    public = {
        name
        for name, value in vars(mcp_gateway).items()
        if not name.startswith("_")
        and not getattr(value, "__name__", "").startswith("mcp_gateway.")
        and name not in {"annotations"}
    }
    assert public <= set(mcp_gateway.__all__)
