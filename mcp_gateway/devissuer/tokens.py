"""What the development issuer's grants return: an issued token, or an RFC 6749 §5.2 error. DEV ONLY."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TokenErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "unsupported_response_type",
]


class TokenRequestError(Exception):
    """An RFC 6749 §5.2 error response (RFC 8707 §2 adds invalid_target)."""

    def __init__(
        self,
        error: TokenErrorCode,
        description: str,
        *,
        status_code: int = 400,
        www_authenticate: str | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status_code = status_code
        self.www_authenticate = www_authenticate


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    scope: str
    expires_in: int
