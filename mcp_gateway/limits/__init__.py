"""Shared limits: rate-limit token buckets and per-principal session counters behind one seam.

`LimitStore` is what the request pipeline asks; `MemoryLimitStore` keeps everything in this process.
A shared store (Redis) is one new module plus one line in `build_limit_store`.
"""

from __future__ import annotations

from mcp_gateway.limits.memory import MemoryLimitStore
from mcp_gateway.limits.store import LimitStore, build_limit_store

__all__ = ["LimitStore", "MemoryLimitStore", "build_limit_store"]
