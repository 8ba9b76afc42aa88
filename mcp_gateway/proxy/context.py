"""What one exchange is about (filled in as the pipeline learns it) and how it ended (one value)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mcp_gateway.auth.principal import Principal
from mcp_gateway.credentials.source import CredentialUse
from mcp_gateway.policy.decision import Decision
from mcp_gateway.proxy.jsonrpc import ClientMessage

if TYPE_CHECKING:  # the route is carried, never built, here
    from mcp_gateway.proxy.route import Route

OutcomeKind = Literal[
    "ok",  # answered; the answer was relayed
    "tool_error",  # answered with a JSON-RPC error or an isError result
    "upstream_error",  # the upstream failed, refused the gateway's credentials, or sent garbage
    "timeout",  # the upstream did not answer in time
    "identity_mismatch",  # the upstream's TLS key is not the pinned one; nothing was sent
    "server_request_refused",  # the upstream asked the client for something `server_requests` refuses
    "stream_closed",  # handshake era: the upstream closed a resumable stream before answering
    "session_not_found",  # the upstream ended the session (404)
    "denied",  # the gateway refused the request
    "aborted",  # the client went away, or the call was cancelled
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one exchange ended: what happened, the HTTP status the client got, and why, if it failed.

    The relay and the refusals return one of these; the recorder alone turns it into the audit outcome.
    """

    kind: OutcomeKind
    http_status: int
    error: str | None = None
    credential: CredentialUse | None = None  # what the upstream leg carried (audited, never a secret)


ABORTED = Outcome("aborted", 499)


@dataclass(slots=True)
class CallContext:
    """Facts about one exchange, filled in by the pipeline as it learns them (one writer: the pipeline)."""

    route: Route
    timestamp: float
    client_address: str | None
    started: float = field(default_factory=time.perf_counter)
    event_id: str | None = None  # drawn when the first record is built: most exchanges build none
    message: ClientMessage | None = None
    principal: Principal | None = None
    token_reference: str | None = None  # `token_reference(token)` of a token that did not verify
    refusal_reason: str | None = None  # why authentication failed (missing token, invalid_token, ...)
    decision: Decision | None = None
    session_id: str | None = None
    intent_written: bool = False
    closed: bool = False  # the closing record (outcome or refusal) was handed to the store
    arguments_sha256: str | None = None  # computed once: intent and outcome records carry the same digest
    bearer_token: bytes | None = field(default=None, repr=False)  # the verified client token, as presented
    approval: str | None = None  # JSON {id, approver, decision, reason}: a person's word on a held call

    @property
    def server(self) -> str:
        return self.route.name

    @property
    def upstream_identity(self) -> str:
        return self.route.upstream_identity

    def outcome_pending(self) -> bool:
        return self.intent_written and not self.closed
