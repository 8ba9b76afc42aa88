"""Sessions per principal, counted in this process: the in-memory half of the session cap."""

from __future__ import annotations

from mcp_gateway.errors import RateLimited


class SessionLedger:
    """How many handshake sessions each principal holds open through this gateway process, capped.

    SECURITY.md: thousands of sessions from one principal must meet a cap (429 with Retry-After), not
    exhaust the upstream, which keeps state for every session. A session counts from its `initialize`
    (reserved before anything is forwarded, so concurrent initializes cannot overshoot) until it is
    ended with DELETE, the upstream says it is gone (404), or it reaches `max_age_seconds` (after which
    the gateway refuses it too: `expired`). Sealed ids carry their creation time, so expiry holds on every
    replica; the count is per process, as each replica keeps its own.

    Memory: at most `max_per_principal` entries per principal that holds a valid token.
    """

    def __init__(self, max_per_principal: int, max_age_seconds: float) -> None:
        if max_per_principal < 1 or not max_age_seconds > 0:
            raise ValueError("max_per_principal and max_age_seconds must be positive")
        self.max_per_principal = max_per_principal
        self.max_age_seconds = max_age_seconds
        # principal → {(server, upstream session id): created}; and initializes in flight per principal.
        self._open: dict[str, dict[tuple[str, str], float]] = {}
        self._reserved: dict[str, int] = {}

    def count(self, principal: str) -> int:
        return len(self._open.get(principal, ())) + self._reserved.get(principal, 0)

    def reserve(self, principal: str, now: float) -> None:
        """Hold a place for a session about to be created; raise RateLimited if the principal is at the cap."""
        sessions = self._open.get(principal)
        if sessions:
            for key in [k for k, created in sessions.items() if now - created >= self.max_age_seconds]:
                del sessions[key]
            if not sessions:
                del self._open[principal]
        if self.count(principal) >= self.max_per_principal:
            # Retry when the oldest session expires, unless initializes in flight are what fills the cap.
            retry_after = max(1.0, min(sessions.values()) + self.max_age_seconds - now) if sessions else 1.0
            raise RateLimited(
                f"Too Many Requests: this principal already has {self.max_per_principal} open sessions "
                "(max_sessions_per_principal); end one with DELETE before opening another",
                retry_after=retry_after,
            )
        self._reserved[principal] = self._reserved.get(principal, 0) + 1

    def opened(self, principal: str, server: str, upstream_session_id: str, created: float) -> None:
        """The reserved place is now this session."""
        self._release(principal)
        self._open.setdefault(principal, {})[(server, upstream_session_id)] = created

    def cancel(self, principal: str) -> None:
        """The initialize created no session (refused, failed, or the upstream is stateless)."""
        self._release(principal)

    def closed(self, principal: str, server: str, upstream_session_id: str) -> None:
        sessions = self._open.get(principal)
        if sessions is not None:
            sessions.pop((server, upstream_session_id), None)
            if not sessions:
                del self._open[principal]

    def _release(self, principal: str) -> None:
        left = self._reserved.get(principal, 0) - 1
        if left > 0:
            self._reserved[principal] = left
        else:
            self._reserved.pop(principal, None)
