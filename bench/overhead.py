"""What the gateway costs: the example upstream's `echo` tool called directly and through the gateway, same run.

    python bench/overhead.py            # full run, about 4 minutes (6 with --root and --phases)
    python bench/overhead.py --quick    # about 30 seconds

Starts four processes on loopback: the example upstream (examples/everything_server.py), the development
token issuer, and two gateways in front of the upstream, one with the durable SQLite audit sink (the default,
WAL + synchronous=FULL, group commit) and one with auditing off (bench/_gateway_proc.py). This process is the
load generator (bench/_load.py): raw HTTP/1.1 keep-alive, one connection per concurrent worker.

For each protocol era (2026-07-28 stateless; 2025-11-25 with initialize and a session per connection) and
each concurrency (1, 8, 64) it measures three arms back to back — direct, gateway with audit off, gateway
with audit on — in `--rounds` interleaved rounds, and reports for each gateway arm the throughput ratio
against direct, the added p50/p99 latency, and the gateway's CPU per call read from the gateway process's
own accounting (/proc/PID/stat utime+stime, all threads, so the audit writer thread is included). Every
figure is relative to the direct baseline measured in the same run. See bench/README.md.

In the same run it also measures the floor (uvicorn with a bare ASGI app, and a bare asyncio TCP relay to
the upstream: bench/_floor.py), with `--phases` a gateway whose steps are timed (bench/_phases.py), and with
`--root PATH` the gateways of another checkout side by side with this one's. It prints each gateway's CPU
as a share of the upstream's, and exits 1 when a target of issue #12 is missed (bench/_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
sys.path[:0] = [str(_HERE), str(_ROOT)]  # run from a checkout: the package need not be installed

import _report  # noqa: E402
from _load import Era, run_arm  # noqa: E402
from _stack import CLK_TCK, Stack, _fs_type, arms_for, start_stack  # noqa: E402

__all__ = ["CLK_TCK", "ERAS", "start_stack"]  # profile_gateway.py's imports

ERAS: tuple[Era, ...] = ("2026-07-28", "2025-11-25")


def durable_write_ms(directory: Path, writes: int = 100) -> list[float]:
    """Milliseconds each of `writes` appended 4 KiB pwrite + fdatasync took in `directory` (the audit's disk)."""
    path = directory / "durable-write.probe"
    block = b"x" * 4096
    out = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(writes):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return out


async def measure(stack: Stack, args: argparse.Namespace, arms: list[str]) -> _report.Cells:
    cells: _report.Cells = {}
    # Warm every path once (token cache, upstream pool, imports on first use) before anything counts.
    for era in args.eras:
        for arm in arms:
            await run_arm(stack.targets[arm], era, 8, warmup=args.warmup, duration=0.2, probe=stack.probe)
    total = len(args.eras) * len(args.concurrency)
    done = 0
    for era in args.eras:
        for concurrency in args.concurrency:
            done += 1
            for round_no in range(args.rounds):
                # Rotate the order each round so slow drift (other load, disk) does not favour one arm.
                shift = round_no % len(arms)
                for arm in arms[shift:] + arms[:shift]:
                    result = await run_arm(
                        stack.targets[arm],
                        era,
                        concurrency,
                        warmup=args.warmup,
                        duration=args.duration,
                        probe=lambda arm=arm: stack.probe(arm),  # type: ignore[misc]
                    )
                    cells.setdefault((era, concurrency, arm), _report.Cell()).add(result)
            direct = cells[(era, concurrency, "direct")]
            on = cells[(era, concurrency, "gw-on")]
            print(
                f"  [{done}/{total}] {era} C={concurrency:<3} direct {direct.throughput:7.0f}/s"
                f"  gateway(audit on) {on.throughput:7.0f}/s  ratio {on.throughput / direct.throughput:.2f}",
                file=sys.stderr,
                flush=True,
            )
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short windows, one round: about a minute")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measured window (default 1.25)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per window (default 0.5)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell (default 4)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--eras", nargs="+", default=list(ERAS), choices=ERAS)
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place processes (default: pinned)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling niceness for every benchmark process (negative needs root): on a shared machine, "
        "e.g. -10 makes other load yield to the benchmark",
    )
    parser.add_argument(
        "--audit-synchronous",
        choices=["full", "normal"],
        default="full",
        help="the audit-on gateway's [audit] synchronous (full: fsync per group commit; normal: survives a kill)",
    )
    parser.add_argument("--root", default=None, help="also serve the gateways of this checkout (root-off, root-on)")
    parser.add_argument("--phases", action="store_true", help="also an audit-on gateway with its steps timed")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor arms (bare ASGI app, TCP relay)")
    parser.add_argument("--workdir", default=None, help="parent directory of the run's files (audit.db lives here)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (configs, logs, audit.db)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    args.duration = args.duration or (0.8 if args.quick else 1.25)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.rounds = args.rounds or (1 if args.quick else 4)
    if args.root and not (Path(args.root) / "mcp_gateway").is_dir():
        parser.error(f"--root {args.root}: no mcp_gateway package there")
    arms = arms_for(args)

    import uvloop

    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started below
    started = time.monotonic()
    with start_stack(args) as stack:
        audit_db = stack.workdir / "gw-on" / "audit.db"
        print(
            f"mcp-gateway overhead benchmark: {os.cpu_count()} CPUs; {stack.pinning}; nice {args.nice}\n"
            f"  arms {', '.join(arms)}{f' (root {args.root})' if args.root else ''}\n"
            f"  eras {', '.join(args.eras)}; concurrency {args.concurrency}; {args.rounds} round(s) of "
            f"{args.duration:g} s per arm after {args.warmup:g} s warm-up; audit db on {_fs_type(audit_db)} "
            f"({audit_db.parent})\n  pids: {', '.join(f'{k} {v}' for k, v in stack.pids().items())}",
            file=sys.stderr,
            flush=True,
        )
        writes = durable_write_ms(audit_db.parent)
        cells = uvloop.run(measure(stack, args, arms))
        writes += durable_write_ms(audit_db.parent)
        audit_rows = -1
        with contextlib.suppress(OSError):
            audit_rows = _audit_rows(audit_db)
    write_ms = statistics.median(writes)
    elapsed = time.monotonic() - started
    rows = _report.build_rows(cells, args.eras, args.concurrency, arms)
    checks = _report.check_targets(rows, write_ms)
    tables = [("gateway arms", _report.main_table(rows))]
    if "floor-asgi" in arms:
        tables.append(("the floor (CPU per call)", _report.floor_table(cells, rows, args.eras, args.concurrency)))
    if "gw-phases" in arms:
        tables.append(
            ("per-phase CPU, audit on, instrumented gateway", _report.phase_table(cells, args.eras, args.concurrency))
        )
    if args.root:
        tables.append(
            (f"this tree vs --root {args.root}", _report.root_table(cells, rows, args.eras, args.concurrency))
        )
    tables.append(("targets (issue #12)", _report.targets_table(checks)))
    for title, table in tables:
        print(f"\n{title}:\n{_report.text(table)}")
    print("\nMarkdown:")
    for title, table in tables:
        print(f"\n**{title}**\n\n{table}")
    print()
    errors = sum(cell.errors for cell in cells.values())
    foreign = max(r["foreign_load_cores"] for r in rows)
    print(f"runtime {elapsed:.0f} s; pinning: {stack.pinning}; nice {args.nice}")
    print(
        f"one durable write (4 KiB append + fdatasync) on the audit's disk: median {write_ms:.3f} ms "
        f"(p90 {sorted(writes)[int(len(writes) * 0.9)]:.3f} ms, {len(writes)} writes before and after)"
    )
    print(f"audit records written by the audit-on gateway: {audit_rows}")
    if stack.sink_stats:
        print(stack.sink_stats.rstrip())
    if foreign > 0.1:
        print(
            f"note: up to {foreign:.2f} cores of CPU were used by processes outside this benchmark during a "
            "window; figures from a busy machine are noisy"
        )
    missed = [c for c in checks if not c[4]]
    if missed:
        print("targets missed: " + "; ".join(f"{t} {cell}: {v} (limit {lim})" for t, cell, v, lim, _ in missed))
    else:
        print("all targets met")
    if errors:
        bad = next(r for r in rows if r["errors"])
        print("\n" + "!" * 78)
        print(f"!!! {errors} CALLS FAILED inside measured windows: these figures are NOT valid")
        print(f"!!! first failure: {bad['first_error']}")
        print("!" * 78)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "checks": checks,
                    "durable_write_ms": write_ms,
                    "cells": {f"{e}|{c}|{a}": cell.cpu | {"calls": cell.calls} for (e, c, a), cell in cells.items()},
                    "runtime_s": elapsed,
                    "pinning": stack.pinning,
                },
                indent=1,
            )
        )
    return 1 if errors or missed else 0


def _audit_rows(path: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM audit_records").fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
