"""Traces: one span per MCP request with a child per step, the client's trace continued and propagated upstream."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_gateway.observe import tracing
from mcp_gateway.observe.tracing import NO_TRACER, build_tracer
from tests._mcp import modern_headers
from tests._servers import serve_asgi
from tests._stack import Stack, gateway_stack
from tests.e2e._audit_support import REPO
from tests.proxy._support import modern_call_body, read_body, send_raw

pytestmark = pytest.mark.anyio

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
STEPS = ["authenticate", "decide", "audit intent", "upstream exchange", "relay"]


@pytest.fixture(scope="module")
async def traced(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    exporter = InMemorySpanExporter()
    async with gateway_stack(tmp_path_factory.mktemp("traced"), tracer=build_tracer(None, exporter=exporter)) as stack:
        stack.extra["spans"] = exporter
        yield stack


async def _call(stack: Stack, tool: str, scopes: tuple[str, ...], headers: dict[str, str], **body: Any) -> int:
    exporter: InMemorySpanExporter = stack.extra["spans"]
    exporter.clear()
    call = modern_call_body(tool, {"message": "argument-CANARY"})
    call["params"]["_meta"].update(body)
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(),
                headers={**modern_headers(stack.token(scopes), "tools/call", tool), **headers},
                json=call,
            )
    return response.status_code


def _tree(stack: Stack) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans: tuple[ReadableSpan, ...] = stack.extra["spans"].get_finished_spans()
    (root,) = [s for s in spans if s.name.startswith("mcp ")]
    return root, sorted((s for s in spans if s is not root), key=lambda s: s.start_time or 0)


async def test_a_tool_call_is_one_span_with_a_child_per_step_continuing_the_clients_trace(traced: Stack) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    assert await _call(traced, "echo", ("tools:read",), {"traceparent": traceparent}) == 200
    root, children = _tree(traced)
    assert root.name == "mcp tools/call"
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE
    assert root.parent is not None and format(root.parent.span_id, "016x") == CLIENT_SPAN
    assert [c.name for c in children] == STEPS
    assert all(c.parent is not None and c.parent.span_id == root.context.span_id for c in children)
    assert dict(root.attributes or {}) == {
        "mcp.server": "everything",
        "http.request.method": "POST",
        "mcp.method": "tools/call",
        "mcp.tool": "echo",
        "mcp.decision": "allow",
        "mcp.outcome": "ok",
        "http.response.status_code": 200,
    }
    # The upstream sees the gateway's own exchange span as the parent, in the client's trace.
    exchange = children[STEPS.index("upstream exchange")]
    sent = traced.tap.requests[-1][1]["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{exchange.context.span_id:016x}-01"
    every_value = repr([dict(s.attributes or {}) for s in (root, *children)])
    assert "argument-CANARY" not in every_value and "Bearer" not in every_value


async def test_a_traceparent_in_params_meta_is_honoured_when_the_header_is_absent(traced: Stack) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    assert await _call(traced, "echo", ("tools:read",), {}, traceparent=traceparent) == 200
    root, _ = _tree(traced)
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE


async def test_a_step_up_ends_at_decide_with_its_decision_and_outcome(traced: Stack) -> None:
    assert await _call(traced, "delete_everything", ("tools:call",), {}) == 403
    root, children = _tree(traced)
    assert [c.name for c in children] == ["authenticate", "decide"]
    attributes = dict(root.attributes or {})
    assert (attributes["mcp.decision"], attributes["mcp.outcome"]) == ("step_up", "denied")
    assert root.parent is None  # no client trace: a new one


def test_tracing_off_imports_no_opentelemetry_sdk_and_no_tracing_backend() -> None:
    code = (
        "import sys; from mcp_gateway.config import GatewayConfig; from mcp_gateway.app import create_app;"
        "from mcp_gateway.audit.sink import MemoryAuditSink;"
        "app = create_app(GatewayConfig(), verifier=object(), audit=MemoryAuditSink(), secrets={});"
        "from mcp_gateway.observe.tracing import NO_TRACER; assert app.tracer is NO_TRACER;"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'mcp_gateway.observe.otel'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_with_tracing_off_every_hook_is_the_shared_no_op() -> None:
    # The cost of these hooks is measured in bench/tracing_off.py (never in a timed unit test); here: that
    # tracing off means one shared object whose calls change nothing and allocate no span.
    ctx: Any = None
    headers: list[tuple[bytes, bytes]] = [(b"accept", b"*/*"), (b"traceparent", b"00-client-span-01")]
    span = NO_TRACER.request("everything", {"headers": []})
    assert span is NO_TRACER.request("other", {"headers": []})  # one shared no-op span, nothing built
    for name in STEPS:
        with tracing.step(name, ctx) as child:
            assert child is span
    assert tracing.outbound_headers(headers) is headers  # the client's traceparent goes on untouched
    tracing.outcome(ctx)
    span.end(200)
    assert build_tracer(None) is NO_TRACER


async def test_spans_reach_an_otlp_http_receiver(tmp_path: Path) -> None:
    received: list[int] = []
    arrived = anyio.Event()

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        assert scope["path"] == "/v1/traces" and dict(scope["headers"])[b"content-type"] == b"application/x-protobuf"
        received.append(count)
        arrived.set()
        await send_raw(send, 200, b"", content_type=b"application/x-protobuf")

    async with serve_asgi(receiver) as collector:
        extra = f'[otel]\nendpoint = "{collector}/v1/traces"\nservice_name = "gw-test"\n'
        async with gateway_stack(tmp_path, gateway_extra=extra) as stack:
            stack.extra["spans"] = InMemorySpanExporter()  # unused: this stack exports over OTLP/HTTP only
            async with httpx2.AsyncClient(timeout=10) as http:
                response = await http.post(
                    stack.mcp_url(),
                    headers=modern_headers(stack.token(("tools:read",)), "tools/call", "echo"),
                    json=modern_call_body("echo", {"message": "hi"}),
                )
            assert response.status_code == 200
            provider = stack.app.tracer.provider  # type: ignore[attr-defined]
            assert await anyio.to_thread.run_sync(provider.force_flush)
            with anyio.fail_after(10):
                await arrived.wait()
    assert sum(received) == 1 + len(STEPS)
