"""What the gateway costs: the example upstream's `echo` tool called directly and through the gateway, same run.

    python bench/overhead.py            # full run, about 2.5 minutes
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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
sys.path[:0] = [str(_HERE), str(_ROOT)]  # run from a checkout: the package need not be installed

from _load import ArmResult, Era, Target, percentile, run_arm  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
ERAS: tuple[Era, ...] = ("2026-07-28", "2025-11-25")
ARMS = ("direct", "gw-off", "gw-on")
ARM_LABEL = {"direct": "direct", "gw-off": "off", "gw-on": "on"}

# Targets from issues #2 (proxy core) and #4 (audit), on a 2-core machine.
RATIO_MIN = 0.90  # gateway/direct throughput at C >= 8
ADDED_P50_MAX_MS = 0.5  # at C = 1
GATEWAY_CPU_MAX_US = 250.0  # per call
AUDIT_CPU_MAX = 0.15  # audit on vs off, gateway CPU per call


# -- processes ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes], name: str) -> None:
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode} during start-up; see its log")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not become ready at {url}")
        time.sleep(0.1)


def _wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes], name: str) -> None:
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode} during start-up; see its log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not listen on port {port}")
        time.sleep(0.1)


def _proc_cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of the process `pid`, all its threads, in clock ticks (proc(5): fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _thread_cpu_ticks(pid: int) -> int:
    """utime + stime of the process's main thread (its event loop), in clock ticks."""
    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _system_busy_ticks() -> int:
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mount = parts[1]
            inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


@dataclass
class Stack:
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    pinning: str = "none"
    sink_stats: str = ""  # the audit-on gateway's last words: its sink's counters

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def probe(self) -> dict[str, int]:
        """CPU ticks so far: per process (user + system), "NAME.sys" (system only), "NAME.main" (the main
        thread: a gateway's event loop; the rest is its other threads, i.e. the audit writer), and the whole
        machine."""
        snap: dict[str, int] = {}
        for name, pid in [*self.pids().items(), ("self", os.getpid())]:
            user, system = _proc_cpu_ticks(pid)
            snap[name] = user + system
            snap[f"{name}.sys"] = system
            snap[f"{name}.main"] = _thread_cpu_ticks(pid)
        snap["system"] = _system_busy_ticks()
        return snap


def _issuer_toml(url: str) -> str:
    return f"""# Development issuer for the benchmark only.
issuer = "{url}"
signing_key = "issuer-key.pem"
algorithm = "ES256"
token_lifetime_seconds = 3600

[clients.bench-agent]
secret = "bench-secret-0123456789abcdef"
scopes = ["tools:read", "tools:call"]
sub = "bench-user@example.com"
"""


def _gateway_toml(port: int, issuer: str, synchronous: str = "full") -> str:
    # No [rate_limits]: the benchmark must measure the proxy, not a token bucket.
    return f"""public_url = "http://127.0.0.1:{port}"
host = "127.0.0.1"
port = {port}
allowlist = "server_allowlist.toml"

[auth]
issuer = "{issuer}"
jwks_uri = "{issuer}/jwks.json"
algorithms = ["ES256"]

[audit]
database = "audit.db"
synchronous = "{synchronous}"
"""


def _allowlist_toml(upstream_port: int) -> str:
    return f"""[servers.everything]
url = "http://127.0.0.1:{upstream_port}/mcp"
server_name = "everything"
default_scopes = ["tools:call"]

[servers.everything.tool_scopes]
echo = ["tools:read"]
"""


# Which of the two CPUs each role runs on (index into the CPUs this process may use).
# "bench": the upstream has a CPU to itself in every arm; the gateway shares the other with the load
# generator, so whatever the gateway costs comes out of the same budget in the gateway arms only.
# "profile": the gateway has a CPU to itself, so a sampling profiler sees it running, never preempted.
LAYOUTS: dict[str, dict[str, int]] = {
    "bench": {"upstream": 0, "gateway": 1, "issuer": 1, "loadgen": 1},
    "profile": {"upstream": 0, "gateway": 1, "issuer": 0, "loadgen": 0},
}


@contextlib.contextmanager
def start_stack(args: argparse.Namespace, layout: str = "bench") -> Iterator[Stack]:
    """Start the upstream, the issuer and both gateways; stop them (and remove the run's files) after."""
    from mcp_gateway.config import load_config
    from mcp_gateway.devissuer.config import load_issuer_config
    from mcp_gateway.devissuer.server import mint_token

    workdir = Path(tempfile.mkdtemp(prefix="mcp-gateway-bench-", dir=args.workdir))
    stack = Stack(workdir)
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) >= 2
    roles = LAYOUTS[layout]

    def cpus(role: str) -> set[int]:
        return {cores[roles[role]]} if pin else set(cores)

    if pin:
        where: dict[int, list[str]] = {}
        for role, index in roles.items():
            where.setdefault(cores[index], []).append("load generator" if role == "loadgen" else role)
        stack.pinning = "; ".join(f"CPU {cpu}: {', '.join(names)}" for cpu, names in sorted(where.items()))
        os.sched_setaffinity(0, cpus("loadgen"))
    else:
        stack.pinning = "none (the scheduler places every process)"

    def spawn(name: str, argv: list[str], allowed: set[int]) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        stack.procs[name] = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))},
            preexec_fn=(lambda: os.sched_setaffinity(0, allowed)) if pin else None,
        )

    try:
        issuer_port, upstream_port = _free_port(), _free_port()
        issuer_url = f"http://127.0.0.1:{issuer_port}"
        (workdir / "issuer.toml").write_text(_issuer_toml(issuer_url))
        issuer = load_issuer_config(workdir / "issuer.toml")  # creates the signing key before the issuer runs
        py = sys.executable
        spawn(
            "upstream",
            [
                py,
                str(_ROOT / "examples" / "everything_server.py"),
                "--port",
                str(upstream_port),
                "--log-level",
                "warning",
            ],
            cpus("upstream"),
        )
        spawn(
            "issuer",
            [
                py,
                "-m",
                "mcp_gateway.cli",
                "issuer",
                "--config",
                str(workdir / "issuer.toml"),
                "--port",
                str(issuer_port),
            ],
            cpus("issuer"),
        )
        deadline = time.monotonic() + 30
        _wait_port(upstream_port, deadline, stack.procs["upstream"], "the example upstream")
        _wait_http(f"{issuer_url}/jwks.json", deadline, stack.procs["issuer"], "the issuer")
        stack.targets["direct"] = Target("direct", "127.0.0.1", upstream_port, "/mcp")
        for arm, audit in (("gw-off", "off"), ("gw-on", "sqlite")):
            port = _free_port()
            directory = workdir / arm
            directory.mkdir()
            (directory / "gateway.toml").write_text(
                _gateway_toml(port, issuer_url, getattr(args, "audit_synchronous", "full"))
            )
            (directory / "server_allowlist.toml").write_text(_allowlist_toml(upstream_port))
            config = load_config(directory / "gateway.toml")
            argv = [py, str(_HERE / "_gateway_proc.py"), "--config", str(directory / "gateway.toml"), "--audit", audit]
            spawn(arm, argv, cpus("gateway"))
            token = mint_token(
                issuer,
                "bench-agent",
                scopes=["tools:read"],
                resource=config.resource_uri("everything"),
                now=time.time(),
            )
            stack.targets[arm] = Target(arm, "127.0.0.1", port, "/everything/mcp", token)
        for arm in ("gw-off", "gw-on"):
            _wait_http(f"http://127.0.0.1:{stack.targets[arm].port}/readyz", deadline, stack.procs[arm], arm)
        yield stack
    finally:
        for name in reversed(list(stack.procs)):
            proc = stack.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in stack.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            lines = (workdir / "gw-on.log").read_text(errors="replace").splitlines()
            stack.sink_stats = next((line for line in lines if line.startswith("audit sink stats:")), "")
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One (era, concurrency, arm), summed over rounds."""

    calls: int = 0
    errors: int = 0
    errors_outside: int = 0
    seconds: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    cpu: dict[str, int] = field(default_factory=dict)  # tick deltas per process, "self", "system"
    first_error: str | None = None
    per_round: list[float] = field(default_factory=list)  # calls/s of each round's window

    def add(self, result: ArmResult) -> None:
        self.per_round.append(result.calls / result.seconds if result.seconds else 0.0)
        self.calls += result.calls
        self.errors += result.errors
        self.errors_outside += result.errors_outside
        self.seconds += result.seconds
        self.latencies_ns += result.latencies_ns
        self.first_error = self.first_error or result.first_error
        assert result.probes is not None
        before, after = result.probes
        for key in after:
            self.cpu[key] = self.cpu.get(key, 0) + after[key] - before[key]

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ns), q) / 1e6

    def cpu_us_per_call(self, proc: str) -> float:
        return self.cpu.get(proc, 0) / CLK_TCK / self.calls * 1e6 if self.calls else float("nan")

    def foreign_cores(self) -> float:
        ours = sum(v for k, v in self.cpu.items() if k != "system" and "." not in k)
        return max(0, self.cpu.get("system", 0) - ours) / CLK_TCK / self.seconds if self.seconds else 0.0


async def measure(stack: Stack, args: argparse.Namespace) -> dict[tuple[str, int, str], Cell]:
    cells: dict[tuple[str, int, str], Cell] = {}
    # Warm every path once (token cache, upstream pool, imports on first use) before anything counts.
    for era in args.eras:
        for arm in ARMS:
            await run_arm(stack.targets[arm], era, 8, warmup=args.warmup, duration=0.2, probe=stack.probe)
    total = len(args.eras) * len(args.concurrency)
    done = 0
    for era in args.eras:
        for concurrency in args.concurrency:
            done += 1
            for round_no in range(args.rounds):
                # Rotate the order each round so slow drift (other load, disk) does not favour one arm.
                order = ARMS[round_no % 3 :] + ARMS[: round_no % 3]
                for arm in order:
                    result = await run_arm(
                        stack.targets[arm],
                        era,
                        concurrency,
                        warmup=args.warmup,
                        duration=args.duration,
                        probe=stack.probe,
                    )
                    cells.setdefault((era, concurrency, arm), Cell()).add(result)
            direct = cells[(era, concurrency, "direct")]
            on = cells[(era, concurrency, "gw-on")]
            print(
                f"  [{done}/{total}] {era} C={concurrency:<3} direct {direct.throughput:7.0f}/s"
                f"  gateway(audit on) {on.throughput:7.0f}/s  ratio {on.throughput / direct.throughput:.2f}",
                file=sys.stderr,
                flush=True,
            )
    return cells


# -- reporting ------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_rows(cells: dict[tuple[str, int, str], Cell], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for era in args.eras:
        for concurrency in args.concurrency:
            direct = cells[(era, concurrency, "direct")]
            off_cpu = cells[(era, concurrency, "gw-off")].cpu_us_per_call("gw-off")
            for arm in ("gw-off", "gw-on"):
                gw = cells[(era, concurrency, arm)]
                cpu = gw.cpu_us_per_call(arm)
                ratios = [g / d if d else float("nan") for g, d in zip(gw.per_round, direct.per_round, strict=True)]
                row: dict[str, Any] = {
                    "era": era,
                    "concurrency": concurrency,
                    "audit": ARM_LABEL[arm],
                    "direct_per_s": direct.throughput,
                    "gateway_per_s": gw.throughput,
                    # The median of per-round ratios: each round's arms ran back to back, so a burst of
                    # load from outside the benchmark spoils one round's ratio, not the figure.
                    "ratio": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "direct_p50_ms": direct.p(50),
                    "gateway_p50_ms": gw.p(50),
                    "added_p50_ms": gw.p(50) - direct.p(50),
                    "direct_p99_ms": direct.p(99),
                    "gateway_p99_ms": gw.p(99),
                    "added_p99_ms": gw.p(99) - direct.p(99),
                    "gateway_cpu_us": cpu,
                    "gateway_cpu_sys_us": gw.cpu_us_per_call(f"{arm}.sys"),
                    # Outside the event loop's thread: the audit writer (and any worker thread). Process and
                    # thread figures are rounded to ticks separately, so a difference near 0 can go negative.
                    "gateway_cpu_threads_us": max(0.0, cpu - gw.cpu_us_per_call(f"{arm}.main")),
                    "upstream_cpu_us_direct": direct.cpu_us_per_call("upstream"),
                    "upstream_cpu_us_gateway": gw.cpu_us_per_call("upstream"),
                    "loadgen_cpu_us": gw.cpu_us_per_call("self"),
                    "audit_cpu_added": (cpu / off_cpu - 1) if arm == "gw-on" and off_cpu else None,
                    "calls": gw.calls,
                    "direct_calls": direct.calls,
                    "errors": gw.errors + direct.errors,
                    "errors_outside_window": gw.errors_outside + direct.errors_outside,
                    "foreign_load_cores": max(gw.foreign_cores(), direct.foreign_cores()),
                    "first_error": gw.first_error or direct.first_error,
                }
                checks = []
                if concurrency >= 8:
                    checks.append(("ratio", row["ratio"] >= RATIO_MIN))
                if concurrency == 1 and arm == "gw-off":  # issue #4 keeps ratio and CPU with audit on, not p50
                    checks.append(("p50", row["added_p50_ms"] <= ADDED_P50_MAX_MS))
                checks.append(("cpu", cpu <= GATEWAY_CPU_MAX_US))
                if arm == "gw-on":
                    checks.append(
                        ("audit", row["audit_cpu_added"] is not None and row["audit_cpu_added"] <= AUDIT_CPU_MAX)
                    )
                row["checks"] = dict(checks)
                rows.append(row)
    return rows


def _cell(value: float, fmt: str, check: bool | None) -> str:
    text = format(value, fmt)
    return text if check is None else f"{text} {_mark(check)}"


def _ratio(r: dict[str, Any]) -> str:
    spread = f" ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})" if r["ratio_min"] != r["ratio_max"] else ""
    check = r["checks"].get("ratio")
    return f"{r['ratio']:.2f}{spread}" + ("" if check is None else f" {_mark(check)}")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| era | C | audit | direct calls/s | gateway calls/s | ratio, median (range) of rounds (≥0.90 @C≥8) "
        "| p50 direct ms | added p50 ms (≤0.5 @C=1) | p99 direct ms | added p99 ms | gateway CPU µs/call (≤250) "
        "| of it, outside the event loop's thread | audit adds CPU (≤15%) | upstream CPU µs/call direct→via gw "
        "| errors |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        c = r["checks"]
        audit = "—" if r["audit_cpu_added"] is None else f"{r['audit_cpu_added'] * 100:+.1f}% {_mark(c['audit'])}"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["era"],
                    str(r["concurrency"]),
                    r["audit"],
                    f"{r['direct_per_s']:.0f}",
                    f"{r['gateway_per_s']:.0f}",
                    _ratio(r),
                    f"{r['direct_p50_ms']:.2f}",
                    _cell(r["added_p50_ms"], "+.2f", c.get("p50")),
                    f"{r['direct_p99_ms']:.2f}",
                    f"{r['added_p99_ms']:+.2f}",
                    _cell(r["gateway_cpu_us"], ".0f", c.get("cpu")),
                    f"{r['gateway_cpu_threads_us']:.0f}",
                    audit,
                    f"{r['upstream_cpu_us_direct']:.0f}→{r['upstream_cpu_us_gateway']:.0f}",
                    str(r["errors"]) if r["errors"] == 0 else f"**{r['errors']}**",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def text_table(rows: list[dict[str, Any]]) -> str:
    cols: list[tuple[str, int, Callable[[dict[str, Any]], str]]] = [
        ("era", 10, lambda r: r["era"]),
        ("C", 3, lambda r: str(r["concurrency"])),
        ("audit", 5, lambda r: r["audit"]),
        ("direct/s", 8, lambda r: f"{r['direct_per_s']:.0f}"),
        ("gw/s", 7, lambda r: f"{r['gateway_per_s']:.0f}"),
        ("ratio (range)", 22, _ratio),
        ("+p50 ms", 12, lambda r: _cell(r["added_p50_ms"], "+.2f", r["checks"].get("p50"))),
        ("+p99 ms", 8, lambda r: f"{r['added_p99_ms']:+.2f}"),
        ("gw µs/call", 11, lambda r: _cell(r["gateway_cpu_us"], ".0f", r["checks"].get("cpu"))),
        ("threads", 7, lambda r: f"{r['gateway_cpu_threads_us']:.0f}"),
        (
            "audit +cpu",
            12,
            lambda r: (
                ""
                if r["audit_cpu_added"] is None
                else f"{r['audit_cpu_added'] * 100:+.1f}% " + _mark(r["checks"]["audit"])
            ),
        ),
        ("up µs d→gw", 11, lambda r: f"{r['upstream_cpu_us_direct']:.0f}→{r['upstream_cpu_us_gateway']:.0f}"),
        ("gen µs", 6, lambda r: f"{r['loadgen_cpu_us']:.0f}"),
        ("errors", 6, lambda r: str(r["errors"])),
        ("other load", 10, lambda r: f"{r['foreign_load_cores']:.2f} cores"),
    ]
    out = ["  ".join(name.rjust(width) for name, width, _ in cols)]
    for r in rows:
        out.append("  ".join(fn(r).rjust(width) for _, width, fn in cols))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short windows, one round: about 30 seconds")
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
    parser.add_argument("--workdir", default=None, help="parent directory of the run's files (audit.db lives here)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (configs, logs, audit.db)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    args.duration = args.duration or (0.8 if args.quick else 1.25)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.rounds = args.rounds or (1 if args.quick else 4)

    import uvloop

    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started below
    started = time.monotonic()
    with start_stack(args) as stack:
        audit_db = stack.workdir / "gw-on" / "audit.db"
        print(
            f"mcp-gateway overhead benchmark: {os.cpu_count()} CPUs; {stack.pinning}; nice {args.nice}\n"
            f"  eras {', '.join(args.eras)}; concurrency {args.concurrency}; {args.rounds} round(s) of "
            f"{args.duration:g} s per arm after {args.warmup:g} s warm-up; audit db on {_fs_type(audit_db)} "
            f"({audit_db.parent})\n  pids: {', '.join(f'{k} {v}' for k, v in stack.pids().items())}",
            file=sys.stderr,
            flush=True,
        )
        cells = uvloop.run(measure(stack, args))
        with contextlib.suppress(OSError):
            audit_rows = _audit_rows(audit_db)
    sink_stats = stack.sink_stats
    elapsed = time.monotonic() - started
    rows = build_rows(cells, args)
    print()
    print(text_table(rows))
    print()
    print(markdown_table(rows))
    print()
    failures = [(r, name) for r in rows for name, ok in r["checks"].items() if not ok]
    errors = sum(cell.errors for cell in cells.values())
    foreign = max(r["foreign_load_cores"] for r in rows)
    print(f"runtime {elapsed:.0f} s; pinning: {stack.pinning}; nice {args.nice}")
    print(f"audit records written by the audit-on gateway: {audit_rows}")
    if sink_stats:
        print(sink_stats)
    if foreign > 0.1:
        print(
            f"note: up to {foreign:.2f} cores of CPU were used by processes outside this benchmark during a "
            "window; figures from a busy machine are noisy"
        )
    if failures:
        print(
            "targets missed: "
            + "; ".join(f"{r['era']} C={r['concurrency']} audit {r['audit']}: {n}" for r, n in failures)
        )
    else:
        print("all targets met")
    if errors:
        bad = next(r for r in rows if r["errors"])
        print("\n" + "!" * 78)
        print(f"!!! {errors} CALLS FAILED inside measured windows: these figures are NOT valid")
        print(f"!!! first failure: {bad['first_error']}")
        print("!" * 78)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "runtime_s": elapsed, "pinning": stack.pinning}, indent=1))
    return 1 if errors else 0


def _audit_rows(path: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM audit_records").fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
