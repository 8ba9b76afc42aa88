"""What the audit sink costs per proxied call, without a gateway around it.

    python bench/audit_sink.py                      # disk and /dev/shm, synchronous full and normal, C = 1, 8, 64
    python bench/audit_sink.py --work-us 150 --upstream-ms 0.4   # shaped like bench/overhead.py's gateway
    python bench/audit_sink.py --root /path/to/other/checkout   # the same bench against another version

Each of C asyncio tasks (on uvloop, as the gateway runs) plays the gateway's part in one call at a time:
`await sink.append(intent)` (durable before forwarding); then, optionally, its turn at a simulated upstream
that serves one call at a time for `--upstream-ms` (which staggers the calls as the real upstream does) and
`--work-us` of CPU spun in a few callbacks (the gateway's own work for a call); then
`sink.append_nowait(outcome)`. Records are built before the clock starts, so what is measured is the sink:
queueing, waking the writer thread, hashing the chain, SQLite, fsync, waking the waiters. Each run ends with
`flush()`, so every outcome is paid for.

"CPU µs/call" is `time.process_time()` (every thread of this process: the event loop and the writer) per
intent+outcome pair. "sink µs/call" subtracts the same run against a sink that drops every record, measured
just before, so it is what auditing adds; "+cswitch/call" likewise for context switches. By default the
process is pinned to one CPU, as the benchmark's gateway is (bench/README.md): the event loop and the
writer thread then share one core, and every thread wake-up is paid for on it. Without `--work-us` and
`--upstream-ms` the calls arrive in lockstep and groups are large; with them, groups are as small as in the
gateway, which is where per-commit costs show.

Each run checks afterwards that every record was written and that `verify` passes. `--root` imports
mcp_gateway from another checkout (say, a `git worktree` of the previous commit), so versions can be
compared in the same conditions; a version without the `synchronous` option prints no "normal" rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import inspect
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def _import_root() -> None:
    # --root must win over an installed package, so it is handled before anything of ours is imported.
    root = _HERE.parent
    if "--root" in sys.argv:
        root = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
    sys.path.insert(0, str(root))


_import_root()

from mcp_gateway.audit.record import AuditRecord, new_event_id  # noqa: E402
from mcp_gateway.audit.sqlite import SQLiteAuditSink  # noqa: E402

try:  # the store seam (--root may name a tree from before it, where verify took the path)
    from mcp_gateway.audit.sqlite import SQLiteAuditReader

    def verify(path: Path) -> Any:
        return SQLiteAuditReader(path).verify()
except ImportError:
    from mcp_gateway.audit.query import verify  # type: ignore[attr-defined,no-redef,unused-ignore]


class NullAuditSink:
    async def start(self) -> None:
        return None

    async def append(self, record: AuditRecord) -> None:
        return None

    def append_nowait(self, record: AuditRecord) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _records(count: int, base: float) -> list[tuple[AuditRecord, AuditRecord]]:
    """Intent/outcome pairs shaped like the gateway's for an `echo` call (bench/overhead.py's traffic)."""
    pairs = []
    for i in range(count):
        now = base + i / 1000
        intent = AuditRecord(
            phase="intent",
            timestamp=now,
            event_id=new_event_id(now),
            agent_id="bench-agent",
            delegating_user="bench-user@example.com",
            session_id=None,
            mcp_server="everything",
            method="tools/call",
            tool="echo",
            scope_granted=("tools:read",),
            scopes_required=("tools:read",),
            token_ttl=3512,
            token_id="8a1c3f0e-7b2d-4c55-9e61-0d3f2b7a9c10",
            request_context="benchmark call",
            decision="allow",
            policy_rule="tool_scopes.echo",
            policy_version="3f" * 32,
            arguments_sha256="a9" * 32,
            client_address="127.0.0.1",
            upstream_identity="http://127.0.0.1:8931/mcp",
        )
        outcome = dataclasses.replace(intent, phase="outcome", outcome="ok", http_status=200, latency_ms=0.731 + i % 7)
        pairs.append((intent, outcome))
    return pairs


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _drive(
    sink: Any, pairs: list[tuple[AuditRecord, AuditRecord]], concurrency: int, upstream_s: float, work: float
) -> None:
    it = iter(pairs)
    upstream = asyncio.Lock()

    async def worker() -> None:
        for intent, outcome in it:
            await sink.append(intent)
            if upstream_s:
                async with upstream:  # one call at a time, as the single-threaded example upstream serves them
                    await asyncio.sleep(upstream_s)
            for _ in range(4 if work else 0):  # the gateway's own work for a call, in a few callbacks
                _spin(work / 4)
                await asyncio.sleep(0)
            sink.append_nowait(outcome)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await sink.flush()


async def _measure(
    sink: Any, calls: int, warmup: int, concurrency: int, upstream_s: float, work: float
) -> tuple[float, float, float]:
    await sink.start()
    try:
        await _drive(sink, _records(warmup, time.time()), concurrency, upstream_s, work)
        pairs = _records(calls, time.time())
        switches0 = _switches()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await _drive(sink, pairs, concurrency, upstream_s, work)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        switches = _switches() - switches0
    finally:
        await sink.aclose()
    return cpu / calls * 1e6, calls / wall, switches / calls


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_nvcsw + usage.ru_nivcsw


def _make_sink(path: Path, synchronous: str) -> SQLiteAuditSink | None:
    if synchronous == "full":
        return SQLiteAuditSink(path)
    if "synchronous" not in inspect.signature(SQLiteAuditSink).parameters:
        return None  # a version without the option
    return SQLiteAuditSink(path, synchronous=synchronous)  # type: ignore[call-arg,unused-ignore]


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            mount, fstype = line.split()[1:3]
            if (str(path) + "/").startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
                best, kind = mount, fstype
    return kind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4000, help="intent+outcome pairs per cell (default 4000)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--synchronous", nargs="+", default=["full", "normal"], choices=["full", "normal"])
    parser.add_argument("--dirs", nargs="+", default=["/var/tmp", "/dev/shm"], help="where the databases go")
    parser.add_argument(
        "--upstream-ms", type=float, default=0.0, help="between intent and outcome, the upstream serves the call"
    )
    parser.add_argument(
        "--work-us", type=float, default=0.0, help="CPU the event loop spends on each call besides the sink"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat each cell; the median is printed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin this process to one CPU")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--root", default=None, help="import mcp_gateway from this checkout instead")
    args = parser.parse_args()

    if not args.no_pin:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    if args.loop == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    import mcp_gateway

    upstream_s, work = args.upstream_ms / 1000, args.work_us / 1e6
    print(f"audit sink micro-benchmark: mcp_gateway from {Path(mcp_gateway.__file__).parent.parent}")
    print(
        f"  {args.calls} calls per cell (+{args.warmup} warm-up), loop {args.loop}, upstream {args.upstream_ms} ms,"
        f" work {args.work_us} µs, CPU {'not pinned' if args.no_pin else sorted(os.sched_getaffinity(0))},"
        f" median of {args.rounds} round(s)"
    )
    columns = ("fs", "sync", "C", "CPU µs/call", "sink µs/call", "calls/s", "rec/commit", "+cswitch/call")
    widths = (6, 6, 4, 12, 13, 9, 10, 13)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for directory in args.dirs:
        fs = _fs_type(Path(directory).resolve())
        for synchronous in args.synchronous:
            for concurrency in args.concurrency:
                results: list[tuple[float, ...]] = []
                for _ in range(args.rounds):
                    null_cpu, _rate, null_switches = runner(
                        _measure(NullAuditSink(), args.calls, args.warmup, concurrency, upstream_s, work)
                    )
                    workdir = Path(tempfile.mkdtemp(prefix="audit-sink-bench-", dir=directory))
                    try:
                        sink = _make_sink(workdir / "audit.db", synchronous)
                        if sink is None:
                            break
                        cpu, rate, switches = runner(
                            _measure(sink, args.calls, args.warmup, concurrency, upstream_s, work)
                        )
                        stats = sink.stats
                        expected = 2 * (args.calls + args.warmup)
                        checked = verify(workdir / "audit.db")
                        if stats.appended != expected or not checked.ok:
                            raise SystemExit(f"the sink lost records or broke its chain: {stats} {checked}")
                        per_commit = stats.appended / max(1, stats.commits)
                        results.append((cpu, cpu - null_cpu, rate, per_commit, switches - null_switches))
                    finally:
                        with contextlib.suppress(OSError):
                            shutil.rmtree(workdir)
                cells: list[str] = [fs, synchronous, str(concurrency)]
                if results:
                    results.sort()
                    cpu, sink_cpu, rate, per_commit, switches = results[len(results) // 2]
                    cells += [f"{cpu:.1f}", f"{sink_cpu:.1f}", f"{rate:.0f}", f"{per_commit:.1f}", f"{switches:.1f}"]
                else:
                    cells.append("(this version has no synchronous option)")
                print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
