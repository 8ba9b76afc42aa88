"""Who a verified bearer token speaks for: the agent, the user who delegated to it, and what it may do."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity and authority carried by one verified access token.

    `agent_id` is the OAuth client acting (RFC 9068 §2.2 `client_id`, else `azp`, else `sub`);
    `delegating_user` is the resource owner it acts for when that is someone else (RFC 8693 §4.1:
    with an `act` chain, `sub` is the party on whose behalf the actors act).
    """

    issuer: str
    subject: str | None
    agent_id: str
    delegating_user: str | None
    actors: tuple[str, ...]
    scopes: frozenset[str]
    expires_at: float
    token_id: str
    audience: tuple[str, ...]

    def binding_key(self) -> str:
        """A stable, unambiguous string of (issuer, subject, agent) that sessions are bound to.

        JSON keeps the three parts apart whatever characters they contain (a plain separator could be
        smuggled inside a `sub`), and leaves out scopes and expiry so a stepped-up or refreshed token
        of the same principal keeps its sessions.
        """
        return json.dumps([self.issuer, self.subject, self.agent_id], ensure_ascii=True, separators=(",", ":"))

    def ttl(self, now: float) -> int:
        """Whole seconds left before `exp`, never negative."""
        return max(0, int(self.expires_at - now))
