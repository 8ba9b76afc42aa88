"""What the tracing hooks talk to: the request span's interface and the context variable holding it."""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mcp_gateway.proxy.context import CallContext, Outcome

Header = tuple[bytes, bytes]


class RequestSpan(Protocol):
    """The span of one MCP request, as the hooks see it."""

    def child(self, name: str, ctx: CallContext) -> RequestSpan: ...
    def __enter__(self) -> RequestSpan: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def outcome(self, outcome: Outcome) -> None: ...
    def outbound_headers(self, headers: list[Header]) -> list[Header]: ...
    def end(self, status: int) -> None: ...


class _NoSpan:
    """Every hook, doing nothing: what the hot path runs when tracing is off."""

    __slots__ = ()

    def child(self, name: str, ctx: CallContext) -> _NoSpan:
        return self

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def outcome(self, outcome: Outcome) -> None:
        return None

    def outbound_headers(self, headers: list[Header]) -> list[Header]:
        return headers

    def end(self, status: int) -> None:
        return None


NO_SPAN = _NoSpan()
current: ContextVar[RequestSpan] = ContextVar("mcp_gateway_request_span", default=NO_SPAN)
