"""A fixed secret from the environment or a file, sent as a bearer token or as a named header."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from mcp_gateway.config import ServerEntry
from mcp_gateway.credentials.files import WatchedFile, env_secret, resolve_path, secret_text
from mcp_gateway.credentials.source import CredentialContext, CredentialRequest, CredentialUse, IssuedCredential
from mcp_gateway.errors import ConfigError

# Shorter secrets could match JSON syntax or ordinary words; redacting them would corrupt messages.
_MIN_REDACTED_SECRET = 8


def _issued(kind: str, header: bytes, secret: str) -> IssuedCredential:
    raw = secret.encode("latin-1")
    value = b"Bearer " + raw if kind == "bearer" else raw
    # The record names the secret by its hash, so a rotation shows in the audit without revealing either value.
    use = CredentialUse(kind, "sha256:" + hashlib.sha256(raw).hexdigest())
    return IssuedCredential(((header, value),), (raw,) if len(raw) >= _MIN_REDACTED_SECRET else (), use)


def _latin1_secret(raw: bytes) -> str:
    text = secret_text(raw)
    text.encode("latin-1")  # header values are bytes: a secret outside Latin-1 cannot be sent as is
    return text


class StaticCredentialSource:
    """`type = "bearer"` or `"header"`: `token_env` read at start-up, or `token_file` re-read when it changes.

    A rotated file changes what the next request sends; the value it replaced stays in `secrets` (redacted
    from every answer) and each request in flight redacts the value it carried until its answer ends.
    A 401 cannot be helped by a retry: the same secret would be refused again.
    """

    __slots__ = ("_file", "_fixed", "_header", "_kind")

    def __init__(self, entry: ServerEntry, env: Mapping[str, str], context: CredentialContext) -> None:
        server, credentials = entry.name, entry.credentials
        assert credentials is not None
        self._kind = credentials.type
        self._header = b"authorization" if credentials.type == "bearer" else credentials.header.lower().encode()
        self._file: WatchedFile[IssuedCredential] | None = None
        self._fixed: IssuedCredential | None = None
        if credentials.token_file is not None:
            key = f"servers.{server}.credentials.token_file"
            path = resolve_path(context.base_dir, credentials.token_file)
            self._file = WatchedFile(path, self._parse, file="server_allowlist.toml", key=key)
        else:
            assert credentials.token_env is not None  # the config model requires one of the two
            key = f"servers.{server}.credentials.token_env"
            value = env_secret(env, credentials.token_env, key=key)
            try:
                self._fixed = _issued(self._kind, self._header, _latin1_secret(value.encode("utf-8")))
            except ValueError as exc:
                raise ConfigError("server_allowlist.toml", key, f"{credentials.token_env}: not Latin-1") from exc

    def _parse(self, raw: bytes) -> IssuedCredential:
        try:
            return _issued(self._kind, self._header, _latin1_secret(raw))
        except UnicodeEncodeError:
            raise ValueError("the secret is not Latin-1 text") from None

    async def issue(self, request: CredentialRequest) -> IssuedCredential:
        if self._file is not None:
            return self._file.current()
        assert self._fixed is not None
        return self._fixed

    async def rejected(self, request: CredentialRequest, credential: IssuedCredential, status: int) -> bool:
        return False  # the same secret again would be refused again

    @property
    def secrets(self) -> tuple[bytes, ...]:
        if self._file is None:
            return self._fixed.secrets if self._fixed is not None else ()
        previous = self._file.previous
        return self._file.value.secrets + (previous.secrets if previous is not None else ())

    async def aclose(self) -> None:
        return None
