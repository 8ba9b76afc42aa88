"""Tokens cached until shortly before they expire, each fetched once however many calls want it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from mcp_gateway.credentials.endpoint import FetchedToken


class TokenCache:
    """Tokens by key; a token is reused until `margin` seconds before its expiry (`clock` is injected).

    Single flight: while a token for a key is being fetched, every other caller for that key awaits the same
    fetch, so a burst of concurrent calls costs the authorization server one request. The fetch runs as its
    own task, so a caller that goes away does not cancel it for the others. At most `max_entries` keys are
    kept (token exchange caches one per subject, agent and scope set): the oldest goes first.
    """

    def __init__(self, clock: Callable[[], float], *, margin: float, max_entries: int = 10_000) -> None:
        self._clock = clock
        self._margin = margin
        self._max_entries = max_entries
        self._tokens: dict[Hashable, tuple[FetchedToken, float]] = {}  # key → (token, when to replace it)
        self._flights: dict[Hashable, asyncio.Task[FetchedToken]] = {}
        self.fetches = 0  # how many fetches started (tests and metrics read it)

    def refresh_at(self, token: FetchedToken, fetched_at: float, cap: float | None) -> float:
        """When a token is replaced: `margin` before its expiry, but never later than half way through its
        life (a short-lived token is not used up to its last second), nor after `cap`."""
        lifetime = token.expires_at - fetched_at
        at = token.expires_at - min(self._margin, lifetime / 2)
        return at if cap is None else min(at, cap)

    async def get(
        self, key: Hashable, fetch: Callable[[], Awaitable[FetchedToken]], *, cap: float | None = None
    ) -> FetchedToken:
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        flight = self._flights.get(key)
        if flight is None:
            self.fetches += 1
            flight = asyncio.get_running_loop().create_task(self._fetch(key, fetch, cap))
            self._flights[key] = flight
            flight.add_done_callback(_retrieve)
        return await asyncio.shield(flight)

    async def _fetch(
        self, key: Hashable, fetch: Callable[[], Awaitable[FetchedToken]], cap: float | None
    ) -> FetchedToken:
        try:
            started = self._clock()
            token = await fetch()
            self._tokens.pop(key, None)
            if len(self._tokens) >= self._max_entries:
                self._evict()
            self._tokens[key] = (token, self.refresh_at(token, started, cap))
            return token
        finally:
            self._flights.pop(key, None)

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (_, at) in self._tokens.items() if at <= now]:
            del self._tokens[key]
        while len(self._tokens) >= self._max_entries:
            del self._tokens[next(iter(self._tokens))]

    def invalidate(self, key: Hashable, token_id: str) -> bool:
        """Forget the token for `key` if it is still the one named `token_id`; True if the next `get` fetches.

        Many calls refused with the same token all report it; only the first drops it, and the rest share the
        one fetch of its replacement.
        """
        cached = self._tokens.get(key)
        if cached is not None and cached[0].token_id == token_id:
            del self._tokens[key]
        return True

    def live_secrets(self) -> tuple[bytes, ...]:
        return tuple(token.access_token.encode() for token, _ in self._tokens.values())


def _retrieve(task: asyncio.Task[FetchedToken]) -> None:
    # Every waiter may have gone away: mark the exception as seen so that asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()
