"""A blocking view of one PostgreSQL snapshot, for the auditor's commands (which are not asynchronous).

The driver is asynchronous, so the session runs its own event loop in a thread of its own: callers may be
plain code (the CLI) or code already inside an event loop (tests, a future admin endpoint) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

import asyncpg

from mcp_gateway.audit.postgres.schema import connect, display_url, schema_version
from mcp_gateway.audit.store import AuditReadError

_T = TypeVar("_T")
PAGE_ROWS: Final = 500
_READ_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Snapshot:
    """One connection in one REPEATABLE READ, READ ONLY transaction: every read sees the same log."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: Any) -> None:
        self._loop = loop
        self.conn = conn

    def run(self, make: Callable[[Any], Awaitable[_T]]) -> _T:
        """`make(conn)` awaited on the session's loop; its result, or its exception, here."""

        async def call() -> _T:
            return await make(self.conn)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def rows(self, sql: str, *args: Any) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql`, fetched a page at a time through a server-side cursor."""
        cursor = self.run(lambda conn: conn.cursor(sql, *args))
        while True:
            page = self.run(lambda _: cursor.fetch(PAGE_ROWS))
            yield from (tuple(row) for row in page)
            if len(page) < PAGE_ROWS:
                return


def run_blocking(make: Callable[[], Awaitable[_T]]) -> _T:
    """`make()` awaited to completion on an event loop of its own, in a thread of its own."""
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        async def call() -> _T:
            return await make()

        try:
            outcome.append(asyncio.run(call()))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="audit-blocking", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


@contextlib.contextmanager
def reading(url: str, *, timeout: float = 10.0) -> Iterator[Snapshot]:
    """A snapshot of the log at `url`. A database without the audit schema raises FileNotFoundError (the
    reader never creates one), an unknown schema SchemaError, a database that cannot be read AuditReadError."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="audit-reader", daemon=True)
    thread.start()
    conn: Any = None
    try:
        try:
            conn = asyncio.run_coroutine_threadsafe(connect(url, timeout=timeout), loop).result()
            snapshot = Snapshot(loop, conn)
            if snapshot.run(schema_version) is None:
                raise FileNotFoundError(f"no audit log at {display_url(url)} (no audit schema in its search path)")
            snapshot.run(lambda c: c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            yield snapshot
        except FileNotFoundError:
            raise
        except _READ_ERRORS as exc:
            # The driver's errors stay inside this package: the CLI knows only AuditReadError.
            raise AuditReadError(f"{display_url(url)}: {str(exc) or type(exc).__name__}") from exc
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(conn.close(timeout=timeout), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
