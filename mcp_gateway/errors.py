"""The gateway's one exception tree.

GatewayError
├── ConfigError                 bad gateway.toml / server_allowlist.toml (names file, key, fix)
├── CommandError                a command-line input cannot be used (unknown name, port in use); names the fix
├── HTTPError                   anything answered to a client with a status
│   ├── TransportRejected       Host (421), Origin (403), Content-Type/Accept (415/406), size (413)
│   ├── ProtocolRejected        bad JSON-RPC, era/header mismatch, unsupported version (400)
│   │   └── MessageRefused      a request without an id, a response nobody asked for (400, always audited)
│   ├── SessionNotFound         unknown, ended or foreign session (404)
│   │   └── UpstreamSessionGone the upstream ended the session it was asked about (404)
│   ├── AuthError               renders its own WWW-Authenticate (RFC 6750 §3)
│   │   ├── MissingToken        401, no `error` parameter
│   │   ├── InvalidToken        401 invalid_token
│   │   ├── InvalidRequest      400 invalid_request
│   │   └── InsufficientScope   403 insufficient_scope with the operation's scopes
│   ├── AuthUnavailable         503 + Retry-After: tokens cannot be checked now (JWKS, introspection down)
│   ├── RateLimited             429 + Retry-After
│   ├── LimitStoreUnavailable   503 + Retry-After: the shared limit store (Redis) cannot be asked now
│   └── AuditUnavailable        503: the intent record could not be made durable (fail closed)
└── UpstreamError               the upstream leg failed: 502, JSON-RPC -32603 at the edge
    ├── UpstreamConnectError    refused, reset, DNS, TLS handshake failure
    │   └── UpstreamIdentityError   the peer certificate does not match the pinned identity
    ├── UpstreamTimeout         connect or read timeout: 504
    ├── UpstreamProtocolError   malformed HTTP, oversized head/body, close-delimited body, garbage
    └── UpstreamCredentialError no upstream credential: the AS refused, its endpoint failed, or the
                                upstream still refused it after one refresh (names which and why)

Each error knows how it is answered: `status_code` (HTTP) and `jsonrpc_code` (the JSON-RPC error code of
the body, when the answer is one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

OAuthErrorCode = Literal["invalid_request", "invalid_token", "insufficient_scope"]


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration file is wrong; the message names the file, the key and what is expected."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}")


class CommandError(GatewayError):
    """A command-line input cannot be used (an unknown server name, a port in use); the message says what
    to change. The CLI prints it on one line and exits 2."""


class HTTPError(GatewayError):
    """An error answered to the client with an HTTP status and a short, secret-free message."""

    status_code: int = 400
    jsonrpc_code: int = -32600
    outcome: Literal["denied", "session_not_found"] = "denied"  # the audit outcome of a call that ended with this error

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        jsonrpc_code: int | None = None,
        data: object | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if jsonrpc_code is not None:
            self.jsonrpc_code = jsonrpc_code
        self.data = data
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)


class TransportRejected(HTTPError):
    """Host, Origin, media type or size checks failed before the body was looked at."""


class ProtocolRejected(HTTPError):
    """The request is not valid MCP for the era it claims (400 unless stated)."""


class MessageRefused(ProtocolRejected):
    """A message the gateway does not pass on for its shape (a request without an id, a stray response):
    refused like any invalid request, and always audited, whatever its method."""


class SessionNotFound(HTTPError):
    """Unknown, ended or foreign session: 404 so that the client re-initializes."""

    status_code = 404
    jsonrpc_code = -32001


class UpstreamSessionGone(SessionNotFound):
    """The upstream answered 404 for the session the request carried: it ended; the client re-initializes."""

    outcome = "session_not_found"


def _quote(value: str) -> str:
    # RFC 9110 §11.2 quoted-string: escape backslash and double quote.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AuthError(HTTPError):
    """An authentication or authorization failure that renders its own challenge (RFC 6750 §3)."""

    status_code = 401
    error_code: OAuthErrorCode | None = None

    def __init__(
        self,
        message: str,
        *,
        resource_metadata: str | None = None,
        scopes: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.resource_metadata = resource_metadata
        self.scopes: tuple[str, ...] = tuple(scopes)

    def with_challenge(self, *, resource_metadata: str, scopes: Sequence[str]) -> AuthError:
        """Fill in the route-specific challenge parameters if the raiser did not know them."""
        if self.resource_metadata is None:
            self.resource_metadata = resource_metadata
        if not self.scopes:
            self.scopes = tuple(scopes)
        return self

    def www_authenticate(self) -> str:
        """The `WWW-Authenticate` value; descriptions are generic and never echo the token."""
        params: list[str] = []
        if self.error_code is not None:
            params.append(f"error={_quote(self.error_code)}")
            params.append(f"error_description={_quote(self.message)}")
        if self.scopes:
            params.append(f"scope={_quote(' '.join(self.scopes))}")
        if self.resource_metadata is not None:
            params.append(f"resource_metadata={_quote(self.resource_metadata)}")
        return "Bearer " + ", ".join(params) if params else "Bearer"


class MissingToken(AuthError):
    """No credentials: RFC 6750 §3.1 says the challenge SHOULD NOT carry an error code."""

    status_code = 401
    error_code = None


class InvalidToken(AuthError):
    """Expired, revoked, malformed, wrong audience, wrong issuer, bad signature (RFC 6750 §3.1)."""

    status_code = 401
    error_code = "invalid_token"


class InvalidRequest(AuthError):
    """Malformed authorization request, e.g. two credentials or a non-Bearer scheme (RFC 6750 §3.1)."""

    status_code = 400
    error_code = "invalid_request"


class InsufficientScope(AuthError):
    """The token lacks scopes this operation needs: 403 naming exactly those scopes (step-up)."""

    status_code = 403
    error_code = "insufficient_scope"


class AuthUnavailable(HTTPError):
    """Tokens cannot be checked right now (JWKS never loaded, introspection endpoint down): 503.

    Not a 401: the client's token may be fine, and a 401 would send it round the token-refresh loop
    against an authorization server that cannot help. The request is refused all the same (fail closed).
    """

    status_code = 503
    jsonrpc_code = -32603

    def __init__(self, message: str) -> None:
        super().__init__(message, headers=[("retry-after", "5")])


class RateLimited(HTTPError):
    """A token bucket is empty: 429 with Retry-After (whole seconds, rounded up)."""

    status_code = 429
    jsonrpc_code = -32029

    def __init__(self, message: str, *, retry_after: float) -> None:
        seconds = max(1, int(-(-retry_after // 1)))
        super().__init__(message, headers=[("retry-after", str(seconds))], data={"retryAfter": seconds})
        self.retry_after = retry_after


class LimitStoreUnavailable(HTTPError):
    """The shared limit store cannot answer and `[rate_limits] on_store_down = "deny"`: 503 + Retry-After.

    Not a 429: the client has not spent its limit, and nothing tells how much it has left. The call is
    refused all the same (fail closed), before anything is forwarded.
    """

    status_code = 503
    jsonrpc_code = -32603

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers=[("retry-after", str(retry_after))])


class AuditUnavailable(HTTPError):
    """The audit store cannot make a record durable; nothing may be forwarded (NIST AU-5)."""

    status_code = 503
    jsonrpc_code = -32603


class UpstreamError(GatewayError):
    """The upstream leg failed: answered 502 with a JSON-RPC internal error (-32603) unless stated."""

    status_code = 502
    outcome: Literal["upstream_error", "timeout", "identity_mismatch"] = "upstream_error"
    jsonrpc_code = -32603


class UpstreamConnectError(UpstreamError):
    """Could not connect: refused, reset, unresolvable, TLS handshake failed."""


class UpstreamIdentityError(UpstreamConnectError):
    """The upstream presented a certificate whose key is not the pinned one; nothing was sent."""

    outcome = "identity_mismatch"


class UpstreamTimeout(UpstreamError):
    """Connect or read timeout toward the upstream."""

    status_code = 504
    outcome = "timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream sent something that is not acceptable HTTP/1.1 or MCP."""


class UpstreamCredentialError(UpstreamError):
    """The gateway has no credential the upstream accepts; the message says which one and why, never a secret.

    `reason` is a short fixed token for metrics labels (`token_endpoint_refused`, `token_endpoint_unreachable`,
    `upstream_refused`, ...); the message is what the client reads in the 502.
    """

    def __init__(self, server: str, credential_type: str, reason: str, why: str) -> None:
        self.server = server
        self.credential_type = credential_type
        self.reason = reason
        super().__init__(f"Bad Gateway: the upstream credential for {server} ({credential_type}) failed: {why}")
