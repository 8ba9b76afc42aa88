"""Upstream credentials: what the gateway sends to an upstream in place of the client's token.

A `CredentialSource` issues the credential for one upstream request; `build_credential_source` picks the
implementation for a `[servers.NAME.credentials]` table by its `type`. A new credential type is one new
module with a source class plus one line in `_SOURCES` (see `sources.py`).
"""

from __future__ import annotations

from mcp_gateway.credentials.assertion import SignedAssertionSource
from mcp_gateway.credentials.client import lazy_client
from mcp_gateway.credentials.keys import PublishedKeys
from mcp_gateway.credentials.metrics import CredentialFailures
from mcp_gateway.credentials.oauth import ClientCredentialsSource, TokenExchangeSource
from mcp_gateway.credentials.source import (
    CredentialContext,
    CredentialRequest,
    CredentialSource,
    CredentialUse,
    IssuedCredential,
    NoCredential,
)
from mcp_gateway.credentials.sources import build_credential_source
from mcp_gateway.credentials.static import StaticCredentialSource

__all__ = [
    "ClientCredentialsSource",
    "CredentialContext",
    "CredentialFailures",
    "CredentialRequest",
    "CredentialSource",
    "CredentialUse",
    "IssuedCredential",
    "NoCredential",
    "PublishedKeys",
    "SignedAssertionSource",
    "StaticCredentialSource",
    "TokenExchangeSource",
    "build_credential_source",
    "lazy_client",
]
