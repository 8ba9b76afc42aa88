"""Where a gateway's CPU goes: load one gateway arm and sample it with py-spy (and optionally perf).

    python bench/profile_gateway.py --arm gw-on --era 2026-07-28 --concurrency 8 --seconds 15 [--perf]

The stack is the one bench/overhead.py starts, but laid out for profiling: the gateways get a CPU of their
own (upstream, issuer and load generator share the other), so a sampler sees the gateway running rather
than preempted by the load generator it just woke. py-spy must be installed (`pip install py-spy`, not a
project dependency); `--perf` also records `perf record -g` for the kernel / native split by library.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import run_arm
from overhead import CLK_TCK, ERAS, start_stack


def summarize_raw(path: Path, top: int) -> str:
    """Self and inclusive time by function from py-spy's raw (collapsed) output."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_function(frame) for frame in stack.split(";")]
        if frames[-1].startswith("Runner.run "):
            # No Python frame above the event loop: uvloop waiting in epoll (py-spy cannot tell that
            # apart from running), or the loop's own C code. Left out so that percentages are of work.
            idle += n
            continue
        total += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples in Python code ({idle} more in the event loop itself)", "", "self time (function, file):"]
    out += [f"  {n * 100 / total:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    out += ["", "inclusive time (function and everything it calls), gateway and server frames:"]
    ours = [(k, v) for k, v in inclusive.items() if "mcp_gateway/" in k or "uvicorn/" in k or "sqlite" in k]
    out += [f"  {n * 100 / total:5.1f}%  {name}" for name, n in sorted(ours, key=lambda kv: -kv[1])[:top]]
    return "\n".join(out)


def _function(frame: str) -> str:
    # "name (path/to/file.py:123)" → "name (path/to/file.py)": aggregate a function's lines.
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


async def _profile(args: argparse.Namespace) -> None:
    with start_stack(args, layout="profile") as stack:
        target = stack.targets[args.arm]
        pid = stack.pids()[args.arm]
        print(f"profiling {args.arm} (pid {pid}); {stack.pinning}", file=sys.stderr)
        await run_arm(target, args.era, args.concurrency, warmup=2.0, duration=1.0, probe=stack.probe)
        out = Path(args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        raw = out / f"{args.arm}-{args.era}-c{args.concurrency}.pyspy.txt"
        samplers: list[subprocess.Popen[bytes]] = []

        async def start_samplers() -> None:
            seconds = str(int(args.seconds))
            samplers.append(
                subprocess.Popen(
                    ["py-spy", "record", "--pid", str(pid), "--rate", str(args.rate), "--duration", seconds]
                    + (["--native"] if args.native else [])
                    + ["--format", "raw", "--output", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=open(out / "py-spy.log", "wb"),  # noqa: SIM115
                )
            )
            if args.perf:
                samplers.append(
                    subprocess.Popen(
                        [
                            "perf",
                            "record",
                            "-g",
                            "-F",
                            "499",
                            "-p",
                            str(pid),
                            "-o",
                            str(out / "perf.data"),
                            "--",
                            "sleep",
                            seconds,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            await asyncio.sleep(0.3)  # let the samplers attach before the window opens

        result = await run_arm(
            target,
            args.era,
            args.concurrency,
            warmup=0.5,
            duration=args.seconds,
            probe=stack.probe,
            settle=start_samplers,
        )
        for sampler in samplers:
            sampler.wait()
        assert result.probes is not None
        before, after = result.probes
        cpu = (after[args.arm] - before[args.arm]) / CLK_TCK
        sys_cpu = (after[f"{args.arm}.sys"] - before[f"{args.arm}.sys"]) / CLK_TCK
        print(
            f"{result.calls} calls in {result.seconds:.1f} s ({result.calls / result.seconds:.0f}/s), "
            f"{result.errors} errors; gateway CPU {cpu * 1e6 / max(result.calls, 1):.0f} µs/call "
            f"(of which kernel {sys_cpu * 1e6 / max(result.calls, 1):.0f}); sampled under py-spy, so a little high"
        )
        if not raw.exists():
            print(f"py-spy wrote nothing; see {out / 'py-spy.log'}")
            return
        print(summarize_raw(raw, args.top))
        print(f"\nraw stacks: {raw}")
        if args.perf:
            report = subprocess.run(
                ["perf", "report", "-i", str(out / "perf.data"), "--stdio", "--no-children", "--sort", "dso"],
                capture_output=True,
                text=True,
            )
            lines = [line for line in report.stdout.splitlines() if line.strip() and not line.startswith("#")]
            print("\nperf, on-CPU samples by library:")
            print("\n".join(lines[:15]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arm", choices=("gw-on", "gw-off"), default="gw-on")
    parser.add_argument("--era", choices=ERAS, default="2026-07-28")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--perf", action="store_true", help="also run perf record -g (needs perf)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "mcp-gateway-profiles"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.no_pin = False
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy (into your venv; it is not a project dependency)")
        return 2
    if os.geteuid() != 0:
        print("note: py-spy needs ptrace permission (root, or kernel.yama.ptrace_scope = 0)", file=sys.stderr)
    import uvloop

    uvloop.run(_profile(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
