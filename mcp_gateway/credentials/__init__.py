"""Upstream credentials: what the gateway sends to an upstream in place of the client's token.

A `CredentialSource` gives the headers for one upstream request; `build_credential_source` picks the
implementation for a `[servers.NAME.credentials]` table by its `type`. A new credential type is one new
module with a source class plus one line in `_SOURCES` (see `sources.py`).
"""

from __future__ import annotations

from mcp_gateway.credentials.source import CredentialRequest, CredentialSource, NoCredential
from mcp_gateway.credentials.sources import build_credential_source
from mcp_gateway.credentials.static import StaticCredentialSource

__all__ = [
    "CredentialRequest",
    "CredentialSource",
    "NoCredential",
    "StaticCredentialSource",
    "build_credential_source",
]
