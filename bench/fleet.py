"""How the gateway scales: calls/s and gateway CPU per call with 1 and 2 workers, SQLite or PostgreSQL audit,
Redis limits on or off, in front of an upstream too cheap to be the bottleneck.

    python bench/fleet.py                    # about 2 minutes; needs PostgreSQL and Redis on loopback
    python bench/fleet.py --duration 2 --rounds 1

Processes: `bench/_cheap_upstream.py` (answers `tools/call echo` in a few µs, 2026-07-28 era), the
development issuer, and for each cell one `mcp-gateway serve --workers N` (the real command). This process
is the load generator (`bench/_load.py`: raw HTTP/1.1 keep-alive, `--concurrency` connections).

Per cell: calls/s, the gateway's CPU per call (utime + stime of the serve parent and all its workers, from
/proc), the upstream's and the load generator's. For PostgreSQL cells: records/s, commits/s and records per
commit, counted in the cell's own schema (`tx` is each row's writing transaction, so distinct tx = commits).
At the end: the ratios 2 workers ÷ 1 worker, and PostgreSQL's own commit rate on this box (synchronous_commit
on, one and several connections). bench/README.md says how the figures extrapolate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
sys.path[:0] = [str(_HERE), str(_ROOT)]

from _fleet_probes import (  # noqa: E402
    PG_URL,
    backends,
    connections_to,
    in_thread,
    pg_commit_rate,
    pg_schema,
    redis_server_pids,
    ticks,
    tree,
    written,
)
from _load import Target, run_arm  # noqa: E402
from _stack import _free_port, _issuer_toml, _system_busy_ticks, _wait_http, _wait_port  # noqa: E402

REDIS_URL = os.environ.get("MCP_GATEWAY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CellSpec:
    workers: int
    audit: str  # "sqlite" | "postgres" | "off"
    redis: bool

    @property
    def name(self) -> str:
        return f"{self.workers}w {self.audit} redis-{'on' if self.redis else 'off'}"


CELLS = (
    CellSpec(1, "off", False),
    CellSpec(2, "off", False),
    CellSpec(1, "sqlite", False),
    CellSpec(1, "postgres", False),
    CellSpec(2, "postgres", False),
    CellSpec(1, "postgres", True),
    CellSpec(2, "postgres", True),
)


@dataclass
class Measured:
    calls_per_s: float
    gateway_us: float
    upstream_us: float
    pg_backend_us: float | None
    redis_us: float | None
    loadgen_us: float
    other_cores: float
    errors: int
    records_per_s: float | None = None
    commits_per_s: float | None = None
    first_error: str | None = None


def _gateway_toml(port: int, issuer: str, spec: CellSpec, pg_url: str, prefix: str) -> str:
    text = (
        f'public_url = "http://127.0.0.1:{port}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'allowlist = "server_allowlist.toml"\n\n'
        f'[auth]\nissuer = "{issuer}"\njwks_uri = "{issuer}/jwks.json"\nalgorithms = ["ES256"]\n\n'
    )
    if spec.redis:
        # Buckets too large to refuse anything: every call pays for the three decisions, none is limited.
        big = "{ rate = 1000000.0, burst = 1000000 }"
        text += (
            f'[rate_limits]\nredis_url = "{REDIS_URL}"\nredis_key_prefix = "{prefix}"\n'
            f"per_agent = {big}\nper_agent_tool = {big}\nper_user = {big}\n\n"
        )
    if spec.audit == "off":
        text += "[audit]\nenabled = false\n"
    elif spec.audit == "sqlite":
        text += '[audit]\ndatabase = "audit.db"\n'
    else:
        text += f'[audit]\nurl = "{pg_url}"\n'
    return text


def _allowlist_toml(upstream_port: int) -> str:
    return (
        f'[servers.everything]\nurl = "http://127.0.0.1:{upstream_port}/mcp"\ndefault_scopes = ["tools:call"]\n\n'
        '[servers.everything.tool_scopes]\necho = ["tools:read"]\n'
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}


def _spawn(workdir: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=_env())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_cell(spec: CellSpec, args: argparse.Namespace, workdir: Path, stack: dict[str, Any]) -> Measured:
    from mcp_gateway.devissuer.server import mint_token

    directory = Path(tempfile.mkdtemp(prefix=spec.name.replace(" ", "-") + "-", dir=workdir))
    port = _free_port()
    with pg_schema(spec.audit == "postgres") as pg_url:
        prefix = f"bench-{os.urandom(4).hex()}:"
        (directory / "gateway.toml").write_text(_gateway_toml(port, stack["issuer_url"], spec, pg_url, prefix))
        (directory / "server_allowlist.toml").write_text(_allowlist_toml(stack["upstream_port"]))
        argv = [sys.executable, "-m", "mcp_gateway.cli", "serve", "--config", str(directory / "gateway.toml")]
        gateway = _spawn(directory, "gateway", [*argv, "--workers", str(spec.workers), "--log-level", "warning"])
        try:
            _wait_http(f"http://127.0.0.1:{port}/readyz", time.monotonic() + 60, gateway, spec.name)
            resource = f"http://127.0.0.1:{port}/everything/mcp"
            token = mint_token(
                stack["issuer"], "bench-agent", scopes=["tools:read"], resource=resource, now=time.time()
            )
            target = Target(spec.name, "127.0.0.1", port, "/everything/mcp", token)
            gateway_pids = tree(gateway.pid)
            pids = {"gateway": gateway_pids, "upstream": [stack["upstream"].pid], "self": [os.getpid()]}
            if pg_url:
                # The server processes serving this gateway's audit writers (one per worker).
                port = int(PG_URL.rsplit(":", 1)[1].split("/", 1)[0])
                pids["pg"] = in_thread(backends(PG_URL, connections_to(gateway_pids, port)))
            if spec.redis:
                pids["redis"] = redis_server_pids()  # the whole server: other users' commands count too

            def probe() -> dict[str, Any]:
                snap: dict[str, Any] = {name: ticks(p) for name, p in pids.items()}
                snap["system"] = _system_busy_ticks()
                # From a thread: the load generator's loop is running here, and two statements barely pause it.
                snap["written"] = in_thread(written(pg_url)) if pg_url else (0, 0)
                return snap

            import uvloop

            result = uvloop.run(
                run_arm(target, "2026-07-28", args.concurrency, warmup=args.warmup, duration=args.duration, probe=probe)
            )
        finally:
            _stop(gateway)
    assert result.probes is not None
    before, after = result.probes
    calls = max(result.calls, 1)
    delta = {
        name: after[name] - before[name]
        for name in ("gateway", "upstream", "self", "system", "pg", "redis")
        if name in before
    }
    ours = sum(value for name, value in delta.items() if name != "system")

    def per_call(name: str) -> float | None:
        return delta[name] / CLK_TCK / calls * 1e6 if name in delta else None

    measured = Measured(
        calls_per_s=result.calls / result.seconds,
        gateway_us=delta["gateway"] / CLK_TCK / calls * 1e6,
        upstream_us=delta["upstream"] / CLK_TCK / calls * 1e6,
        pg_backend_us=per_call("pg"),
        redis_us=per_call("redis"),
        loadgen_us=delta["self"] / CLK_TCK / calls * 1e6,
        other_cores=max(0.0, (delta["system"] - ours) / CLK_TCK / result.seconds),
        errors=result.errors,
        first_error=result.first_error,
    )
    if pg_url:
        # The probes' own count queries run inside the window, but they are two statements, not commits.
        measured.records_per_s = (after["written"][0] - before["written"][0]) / result.seconds
        measured.commits_per_s = (after["written"][1] - before["written"][1]) / result.seconds
    return measured


def _row(spec: CellSpec, runs: list[Measured]) -> dict[str, Any]:
    def med(name: str) -> float | None:
        values = [getattr(m, name) for m in runs if getattr(m, name) is not None]
        return statistics.median(values) if values else None

    return {
        "cell": spec.name,
        "workers": spec.workers,
        "audit": spec.audit,
        "redis": spec.redis,
        **{name: med(name) for name in Measured.__dataclass_fields__ if name not in ("errors", "first_error")},
        "errors": sum(m.errors for m in runs),
        "first_error": next((m.first_error for m in runs if m.first_error), None),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per cell and round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="every cell this many times, interleaved; medians")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections of the load generator")
    parser.add_argument("--cells", nargs="+", default=None, help="only cells whose name contains one of these")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (configs, logs, audit.db)")
    args = parser.parse_args(argv)
    from mcp_gateway.devissuer.config import load_issuer_config

    cells = [c for c in CELLS if args.cells is None or any(part in c.name for part in args.cells)]
    workdir = Path(tempfile.mkdtemp(prefix="mcp-gateway-fleet-bench-", dir=args.workdir))
    issuer_port, upstream_port = _free_port(), _free_port()
    issuer_url = f"http://127.0.0.1:{issuer_port}"
    (workdir / "issuer.toml").write_text(_issuer_toml(issuer_url))
    issuer = load_issuer_config(workdir / "issuer.toml")
    py = sys.executable
    upstream = _spawn(workdir, "upstream", [py, str(_HERE / "_cheap_upstream.py"), "--port", str(upstream_port)])
    issuer_proc = _spawn(
        workdir,
        "issuer",
        [py, "-m", "mcp_gateway.cli", "issuer", "--config", str(workdir / "issuer.toml"), "--port", str(issuer_port)],
    )
    stack = {"issuer": issuer, "issuer_url": issuer_url, "upstream": upstream, "upstream_port": upstream_port}
    results: dict[CellSpec, list[Measured]] = {c: [] for c in cells}
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 30
        _wait_port(upstream_port, deadline, upstream, "the cheap upstream")
        _wait_http(f"{issuer_url}/jwks.json", deadline, issuer_proc, "the issuer")
        print(
            f"fleet benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; C = {args.concurrency}; "
            f"{args.rounds} round(s) of {args.duration:g} s after {args.warmup:g} s warm-up",
            file=sys.stderr,
            flush=True,
        )
        for round_number in range(args.rounds):
            for spec in cells if round_number % 2 == 0 else list(reversed(cells)):
                measured = run_cell(spec, args, workdir, stack)
                results[spec].append(measured)
                print(f"  round {round_number + 1}: {spec.name}: {measured.calls_per_s:,.0f} calls/s", file=sys.stderr)
        commit_rates = {n: asyncio.run(pg_commit_rate(n, 2.0)) for n in (1, 4)}
    finally:
        for proc in (upstream, issuer_proc):
            _stop(proc)
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    rows = [_row(spec, runs) for spec, runs in results.items()]
    print(
        "\n| cell | calls/s | gateway CPU µs/call | gateway cores busy | calls/s per gateway core | PG backends µs "
        "| Redis µs | upstream µs | loadgen µs "
        "| other load (cores) | PG records/s | PG commits/s | records/commit | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_commit = r["records_per_s"] / r["commits_per_s"] if r["commits_per_s"] else None
        print(
            f"| {r['cell']} | {r['calls_per_s']:,.0f} | {r['gateway_us']:.0f} "
            f"| {r['calls_per_s'] * r['gateway_us'] / 1e6:.2f} | {1e6 / r['gateway_us']:,.0f} "
            f"| {_fmt(r['pg_backend_us'], '.0f')} "
            f"| {_fmt(r['redis_us'], '.0f')} | {r['upstream_us']:.0f} "
            f"| {r['loadgen_us']:.0f} | {r['other_cores']:.2f} | {_fmt(r['records_per_s'], ',.0f')} "
            f"| {_fmt(r['commits_per_s'], ',.0f')} | {_fmt(per_commit, '.1f')} | {r['errors']} |"
        )
    by_cell = {(r["audit"], r["redis"], r["workers"]): r for r in rows}
    print("\n| audit, redis | calls/s 2w ÷ 1w | gateway CPU/call 2w ÷ 1w |")
    print("|---|---|---|")
    for (audit, redis, workers), two in by_cell.items():
        one = by_cell.get((audit, redis, 1))
        if workers == 2 and one is not None:
            print(
                f"| {audit}, redis {'on' if redis else 'off'} | {two['calls_per_s'] / one['calls_per_s']:.2f} "
                f"| {two['gateway_us'] / one['gateway_us']:.2f} |"
            )
    print(
        "\nPostgreSQL commits/s with synchronous_commit on (one-row INSERTs): "
        + ", ".join(f"{n} connection{'s' if n > 1 else ''}: {rate:,.0f}" for n, rate in commit_rates.items())
    )
    print(f"runtime {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")
    errors = sum(r["errors"] for r in rows)
    if errors:
        first = next(r["first_error"] for r in rows if r["first_error"])
        print(f"!!! {errors} CALLS FAILED inside measured windows: these figures are NOT valid; first: {first}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
