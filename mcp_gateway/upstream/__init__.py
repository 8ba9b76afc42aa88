"""The upstream leg: pooled keep-alive HTTP/1.1 to the protected MCP server."""

from mcp_gateway.upstream.http11 import UpstreamPool, UpstreamResponse

__all__ = ["UpstreamPool", "UpstreamResponse"]
