"""Choosing the credential source for one allowlist entry: the registry of credential types."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from mcp_gateway.config import ServerEntry
from mcp_gateway.credentials.assertion import SignedAssertionSource
from mcp_gateway.credentials.client import lazy_client
from mcp_gateway.credentials.keys import PublishedKeys
from mcp_gateway.credentials.oauth import ClientCredentialsSource, TokenExchangeSource
from mcp_gateway.credentials.source import CredentialContext, CredentialSource, NoCredential
from mcp_gateway.credentials.static import StaticCredentialSource

SourceFactory = Callable[[ServerEntry, Mapping[str, str], CredentialContext], CredentialSource]

# `[servers.NAME.credentials] type` → how to build its source. A new type registers here.
_SOURCES: dict[str, SourceFactory] = {
    "bearer": StaticCredentialSource,
    "header": StaticCredentialSource,
    "oauth_client_credentials": ClientCredentialsSource,
    "token_exchange": TokenExchangeSource,
    "signed_assertion": SignedAssertionSource,
}


def build_credential_source(
    entry: ServerEntry, env: Mapping[str, str], context: CredentialContext | None = None
) -> CredentialSource:
    """The source for `entry`; `env` is where `*_env` secret references are resolved (start-up only)."""
    if entry.credentials is None:
        return NoCredential()
    return _SOURCES[entry.credentials.type](entry, env, context or default_context())


def default_context(base_dir: str = ".", public_url: str = "http://127.0.0.1:8080") -> CredentialContext:
    """A context for callers that build sources outside an application (the CLI, tests)."""
    return CredentialContext(lazy_client(), time.time, base_dir, public_url, PublishedKeys(time.time))
