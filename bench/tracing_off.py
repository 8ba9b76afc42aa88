"""What tracing's hooks cost a request when `[otel]` is off, as a ratio of the same number of bare calls.

    python bench/tracing_off.py

A request runs eight hooks (the request span, five steps, the outbound headers, the outcome, the end).
Printed: ns per request for the hooks, ns for eight calls of an empty function, and their ratio, all
measured in this run.
"""

from __future__ import annotations

import timeit
from typing import Any

from mcp_gateway.observe import tracing
from mcp_gateway.observe.tracing import NO_TRACER

STEPS = ("authenticate", "decide", "audit intent", "upstream exchange", "relay")


def main() -> None:
    ctx: Any = None
    headers: list[tuple[bytes, bytes]] = [(b"accept", b"*/*")]
    scope: dict[str, Any] = {"headers": []}

    def hooks() -> None:
        span = NO_TRACER.request("everything", scope)
        for name in STEPS:
            with tracing.step(name, ctx):
                pass
        tracing.outbound_headers(headers)
        tracing.outcome(ctx)
        span.end(200)

    def nothing() -> None:
        return None

    def baseline() -> None:
        for _ in range(8):
            nothing()

    runs = 50_000
    hooks_s = min(timeit.repeat(hooks, number=runs, repeat=7)) / runs
    base_s = min(timeit.repeat(baseline, number=runs, repeat=7)) / runs
    print(f"tracing off: {hooks_s * 1e9:.0f} ns per request for all hooks")
    print(f"eight empty calls: {base_s * 1e9:.0f} ns")
    print(f"ratio: {hooks_s / base_s:.1f}x the cost of eight empty function calls")


if __name__ == "__main__":
    main()
