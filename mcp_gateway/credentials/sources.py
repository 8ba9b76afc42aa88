"""Choosing the credential source for one allowlist entry: the registry of credential types."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mcp_gateway.config import Credentials, ServerEntry
from mcp_gateway.credentials.source import CredentialSource, NoCredential
from mcp_gateway.credentials.static import StaticCredentialSource

SourceFactory = Callable[[str, Credentials, Mapping[str, str]], CredentialSource]

# `[servers.NAME.credentials] type` → how to build its source. A new type registers here.
_SOURCES: dict[str, SourceFactory] = {
    "bearer": StaticCredentialSource,
    "header": StaticCredentialSource,
}


def build_credential_source(entry: ServerEntry, env: Mapping[str, str]) -> CredentialSource:
    """The source for `entry`; `env` is where `*_env` secret references are resolved (start-up only)."""
    if entry.credentials is None:
        return NoCredential()
    return _SOURCES[entry.credentials.type](entry.name, entry.credentials, env)
