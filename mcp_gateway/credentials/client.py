"""The HTTP client credential providers use for token endpoints and metadata: created once, on first use."""

from __future__ import annotations

from collections.abc import Callable

import httpx2


def lazy_client(make: Callable[[], httpx2.AsyncClient] | None = None) -> Callable[[], httpx2.AsyncClient]:
    """A getter that builds its client the first time a token is needed (most upstreams never need one).

    The default client follows no redirect: a token request redirected elsewhere would carry the client's
    secret or the client's token to another origin.
    """
    client: httpx2.AsyncClient | None = None

    def get() -> httpx2.AsyncClient:
        nonlocal client
        if client is None:
            client = make() if make is not None else httpx2.AsyncClient(follow_redirects=False)
        return client

    return get
