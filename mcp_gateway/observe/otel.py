"""The OpenTelemetry side of the tracing hooks (imported only when `[otel]` is configured)."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mcp_gateway.observe import context as log_ids
from mcp_gateway.observe.spans import Header, RequestSpan, current

if TYPE_CHECKING:
    from mcp_gateway.config import OtelConfig
    from mcp_gateway.proxy.context import CallContext, Outcome

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = b"traceparent"


class OtelTracer:
    """Owns a TracerProvider of its own (the process-global one is left alone) and starts request spans."""

    def __init__(self, config: OtelConfig | None, *, exporter: SpanExporter | None = None) -> None:
        name = config.service_name if config is not None else "mcp-gateway"
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        if config is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
        self.tracer = self.provider.get_tracer("mcp_gateway")

    def request(self, server: str, scope: MutableMapping[str, Any]) -> RequestSpan:
        traceparent = None
        for key, value in scope["headers"]:
            if key == _TRACEPARENT:
                traceparent = value.decode("latin-1")
                break
        span = _Request(self.tracer, server, scope["method"], traceparent)
        current.set(span)
        return span

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what the batch processor still holds


class _Request:
    """The request span, started at the first step (when the body, and so `_meta.traceparent`, is known)."""

    __slots__ = (
        "_active",
        "_ctx",
        "_http_method",
        "_outcome",
        "_server",
        "_span",
        "_started",
        "_traceparent",
        "_tracer",
    )

    def __init__(self, tracer: trace.Tracer, server: str, http_method: str, traceparent: str | None) -> None:
        self._tracer = tracer
        self._server = server
        self._http_method = http_method
        self._traceparent = traceparent
        self._started = time.time_ns()
        self._span: trace.Span | None = None
        self._active: trace.Span | None = None  # the open child span: what the upstream sees as its parent
        self._outcome: str | None = None
        self._ctx: CallContext | None = None  # the request's facts, read again at the end (the decision)

    def _root(self, ctx: CallContext | None) -> trace.Span:
        if self._span is None:
            traceparent = self._traceparent
            if traceparent is None and ctx is not None and ctx.message is not None:
                # Clients that cannot set headers put the W3C trace context in `params._meta`.
                params = ctx.message.body.get("params")
                meta = params.get("_meta") if isinstance(params, dict) else None
                value = meta.get("traceparent") if isinstance(meta, dict) else None
                traceparent = value if isinstance(value, str) else None
            parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
            self._span = self._tracer.start_span(
                "mcp request",
                context=parent,
                kind=SpanKind.SERVER,
                start_time=self._started,
                attributes={"mcp.server": self._server, "http.request.method": self._http_method},
            )
            log_ids.trace_id.set(format(self._span.get_span_context().trace_id, "032x"))
        return self._span

    def child(self, name: str, ctx: CallContext) -> RequestSpan:
        root = self._root(ctx)
        self._ctx = ctx
        self._describe(root, ctx)
        return _Step(self, self._tracer.start_span(name, context=trace.set_span_in_context(root)))

    def _describe(self, root: trace.Span, ctx: CallContext) -> None:
        # Names and verdicts only: never arguments, tokens or other values the client sent.
        msg = ctx.message
        if msg is not None and msg.method is not None:
            root.set_attribute("mcp.method", msg.method)
            root.update_name(f"mcp {msg.method}")
            if msg.name is not None:
                root.set_attribute("mcp.tool" if msg.method == "tools/call" else "mcp.target", msg.name)
        if ctx.decision is not None:
            root.set_attribute("mcp.decision", ctx.decision.kind)

    def __enter__(self) -> RequestSpan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def outcome(self, outcome: Outcome) -> None:
        self._outcome = outcome.kind

    def outbound_headers(self, headers: list[Header]) -> list[Header]:
        span = self._active or self._span
        if span is None:
            return headers
        context = span.get_span_context()
        own = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        return [*(h for h in headers if h[0] != _TRACEPARENT), (_TRACEPARENT, own.encode("ascii"))]

    def end(self, status: int) -> None:
        root = self._root(None)
        if self._ctx is not None:
            self._describe(root, self._ctx)
        outcome = self._outcome or ("ok" if status < 400 else "denied" if status in (401, 403, 429) else "error")
        root.set_attribute("mcp.outcome", outcome)
        root.set_attribute("http.response.status_code", status)
        if status >= 500 or status == 0:
            root.set_status(Status(StatusCode.ERROR))
        root.end()


class _Step:
    __slots__ = ("_request", "_span")

    def __init__(self, request: _Request, span: trace.Span) -> None:
        self._request = request
        self._span = span

    def child(self, name: str, ctx: CallContext) -> RequestSpan:
        return self._request.child(name, ctx)

    def __enter__(self) -> RequestSpan:
        self._request._active = self._span
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._request._active = None
        self._span.end()

    def outcome(self, outcome: Outcome) -> None:
        self._request.outcome(outcome)

    def outbound_headers(self, headers: list[Header]) -> list[Header]:
        return self._request.outbound_headers(headers)

    def end(self, status: int) -> None:
        self._request.end(status)
