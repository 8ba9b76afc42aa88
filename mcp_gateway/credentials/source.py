"""The credential seam: what every upstream credential provider promises the request pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mcp_gateway.auth.principal import Principal

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """What a provider may base one upstream credential on: who asked, for what, and where it goes.

    `scopes` are exactly the scopes the gateway's policy required for this operation, so that a provider
    can narrow the downstream token to the one operation being called (`scope = "operation"`).
    `subject_token` is the client's own verified token: only a token-exchange provider may use it, as the
    RFC 8693 `subject_token`; it is never sent upstream as it is (MCP authorization §Token Passthrough).
    """

    server: str
    upstream_url: str
    principal: Principal | None
    method: str | None
    name: str | None
    scopes: tuple[str, ...]
    subject_token: str | None = None


class CredentialSource(Protocol):
    """Gives the headers one upstream request carries, and learns when the upstream refused them.

    `headers` may await (a provider may fetch a token); `rejected` is called when the upstream answered
    401 to those headers and returns True only if a retry with fresh headers could succeed (a provider
    refreshes once, never in a loop); `secrets` are the values currently in use, which the relay
    redacts from anything the upstream sends back, so redaction always covers the live ones.
    """

    async def headers(self, request: CredentialRequest) -> Sequence[Header]: ...

    async def rejected(self, request: CredentialRequest, status: int) -> bool: ...

    @property
    def secrets(self) -> tuple[bytes, ...]: ...

    async def aclose(self) -> None: ...


class NoCredential:
    """An upstream that gets no credential from the gateway (no `[credentials]` table)."""

    async def headers(self, request: CredentialRequest) -> Sequence[Header]:
        return ()

    async def rejected(self, request: CredentialRequest, status: int) -> bool:
        return False

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return ()

    async def aclose(self) -> None:
        return None
