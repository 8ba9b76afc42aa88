"""The raw-ASGI helpers' old import path, kept only for `proxy/handler.py`: they live in `transport/`."""

from __future__ import annotations

from mcp_gateway.transport.asgi import Headers, Receive, Scope, Send, header, respond
from mcp_gateway.transport.limits import read_body

__all__ = ["Headers", "Receive", "Scope", "Send", "header", "read_body", "respond"]
