"""Handing a writer thread's results back to the event loops whose callers wait for them."""

from __future__ import annotations

import asyncio
import contextlib

Waiter = asyncio.Future[None]
# A waiter and what to finish it with: None for success, or the exception its caller gets.
Settlement = tuple[Waiter, BaseException | None]


def settle_from_thread(settlements: list[Settlement]) -> None:
    """Finish each waiter from any thread, with one wake-up per event loop however many waiters it has."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Settlement]] = {}
    for item in settlements:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[Settlement]) -> None:
    for waiter, exc in items:
        if waiter.done():  # the caller was cancelled; the record was still written (or not)
            continue
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)
