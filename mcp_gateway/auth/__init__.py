"""OAuth 2.1 resource-server authentication: bearer extraction and token verification (JWT, introspection)."""

from __future__ import annotations

from mcp_gateway.auth.principal import Principal
from mcp_gateway.auth.verifier import CachingVerifier, TokenVerifier, build_verifier

__all__ = ["CachingVerifier", "Principal", "TokenVerifier", "build_verifier"]
