"""A fixed secret from the environment, sent as a bearer token or as a named header."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mcp_gateway.config import Credentials
from mcp_gateway.credentials.source import CredentialRequest, Header
from mcp_gateway.errors import ConfigError

# Shorter secrets could match JSON syntax or ordinary words; redacting them would corrupt messages.
_MIN_REDACTED_SECRET = 8


class StaticCredentialSource:
    """`type = "bearer"` or `"header"`: one value read at start-up; a 401 cannot be helped by a retry."""

    __slots__ = ("_header", "_secrets")

    def __init__(self, server: str, credentials: Credentials, env: Mapping[str, str]) -> None:
        value = env.get(credentials.token_env)
        key = f"servers.{server}.credentials.token_env"
        if not value:
            raise ConfigError("server_allowlist.toml", key, f"environment variable {credentials.token_env} is not set")
        if any(c in value for c in "\r\n\0"):
            raise ConfigError("server_allowlist.toml", key, f"{credentials.token_env} contains CR, LF or NUL")
        secret = value.encode("latin-1")
        if credentials.type == "bearer":
            self._header: Header = (b"authorization", b"Bearer " + secret)
        else:
            self._header = (credentials.header.lower().encode("latin-1"), secret)
        self._secrets = (secret,) if len(secret) >= _MIN_REDACTED_SECRET else ()

    async def headers(self, request: CredentialRequest) -> Sequence[Header]:
        return (self._header,)

    async def rejected(self, request: CredentialRequest, status: int) -> bool:
        return False  # the same secret again would be refused again

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return self._secrets

    async def aclose(self) -> None:
        return None
