"""The benchmark's processes: the upstream, the issuer, the gateways (this tree's and `--root`'s), the floors.

See bench/README.md. `start_stack` starts them pinned as `LAYOUTS` says and stops them afterwards; `Stack.probe`
reads their CPU accounting (and, for a `--phases` gateway, its per-phase totals).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _load import Target

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

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
    phases_arms: set[str] = field(default_factory=set)  # gateways serving GET /__phases

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def probe(self, arm: str | None = None) -> dict[str, int]:
        """CPU ticks so far: per process (user + system), "NAME.sys" (system only), "NAME.main" (the main
        thread: a gateway's event loop; the rest is its other threads, i.e. the audit writer), and the whole
        machine. For a `--phases` gateway `arm`, also its per-phase totals in ns ("ph:PHASE", "phn:PHASE")."""
        snap: dict[str, int] = {}
        for name, pid in [*self.pids().items(), ("self", os.getpid())]:
            user, system = _proc_cpu_ticks(pid)
            snap[name] = user + system
            snap[f"{name}.sys"] = system
            snap[f"{name}.main"] = _thread_cpu_ticks(pid)
        snap["system"] = _system_busy_ticks()
        if arm is not None and arm in self.phases_arms:
            target = self.targets[arm]
            with urllib.request.urlopen(f"http://{target.host}:{target.port}/__phases", timeout=5) as response:
                phases = json.loads(response.read())
            snap["ph.process"] = phases["process_ns"]
            snap["ph.threads"] = phases["threads_ns"]
            for name, (ns, calls) in phases["phases"].items():
                snap[f"ph:{name}"] = ns
                snap[f"phn:{name}"] = calls
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

# The gateway arms: (arm, audit, from --root). Floors and phases are added by what `args` asks for.
GATEWAY_ARMS: tuple[tuple[str, str, bool], ...] = (
    ("gw-off", "off", False),
    ("gw-on", "sqlite", False),
    ("root-off", "off", True),
    ("root-on", "sqlite", True),
)


def arms_for(args: argparse.Namespace) -> list[str]:
    """Every arm a run measures, in its base order: direct, gateways, floors."""
    arms = ["direct", "gw-off", "gw-on"]
    if getattr(args, "root", None):
        arms += ["root-off", "root-on"]
    if getattr(args, "phases", False):
        arms.append("gw-phases")
    if not getattr(args, "no_floor", True):
        arms += ["floor-asgi", "floor-relay"]
    return arms


def _launcher(root: Path) -> Path:
    """The gateway launcher for a checkout: its own bench/_gateway_proc.py, else this tree's (which serves
    older trees the way they served)."""
    own = root / "bench" / "_gateway_proc.py"
    return own if own.exists() else _HERE / "_gateway_proc.py"


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

    def spawn(name: str, argv: list[str], allowed: set[int], root: Path = _ROOT) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        stack.procs[name] = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))},
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
        deadline = time.monotonic() + 60
        _wait_port(upstream_port, deadline, stack.procs["upstream"], "the example upstream")
        _wait_http(f"{issuer_url}/jwks.json", deadline, stack.procs["issuer"], "the issuer")
        stack.targets["direct"] = Target("direct", "127.0.0.1", upstream_port, "/mcp")
        wanted = arms_for(args)
        plan = [(arm, audit, from_root, False) for arm, audit, from_root in GATEWAY_ARMS if arm in wanted]
        if "gw-phases" in wanted:
            plan.append(("gw-phases", "sqlite", False, True))
        for arm, audit, from_root, phases in plan:
            port = _free_port()
            directory = workdir / arm
            directory.mkdir()
            (directory / "gateway.toml").write_text(
                _gateway_toml(port, issuer_url, getattr(args, "audit_synchronous", "full"))
            )
            (directory / "server_allowlist.toml").write_text(_allowlist_toml(upstream_port))
            config = load_config(directory / "gateway.toml")
            root = Path(args.root).resolve() if from_root else _ROOT
            argv = [py, str(_launcher(root)), "--config", str(directory / "gateway.toml"), "--audit", audit]
            if phases:
                argv.append("--phases")
                stack.phases_arms.add(arm)
            spawn(arm, argv, cpus("gateway"), root)
            token = mint_token(
                issuer,
                "bench-agent",
                scopes=["tools:read"],
                resource=config.resource_uri("everything"),
                now=time.time(),
            )
            stack.targets[arm] = Target(arm, "127.0.0.1", port, "/everything/mcp", token)
        floors = [arm for arm in wanted if arm.startswith("floor-")]
        for arm in floors:
            port = _free_port()
            kind = arm.removeprefix("floor-")
            argv = [py, str(_HERE / "_floor.py"), kind, "--port", str(port), "--upstream-port", str(upstream_port)]
            spawn(arm, argv, cpus("gateway"))
            stack.targets[arm] = Target(arm, "127.0.0.1", port, "/mcp")
        for arm, *_ in plan:
            _wait_http(f"http://127.0.0.1:{stack.targets[arm].port}/readyz", deadline, stack.procs[arm], arm)
        for arm in floors:
            _wait_port(stack.targets[arm].port, deadline, stack.procs[arm], arm)
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
            for arm in ("gw-on", "root-on"):
                if (workdir / f"{arm}.log").exists():
                    lines = (workdir / f"{arm}.log").read_text(errors="replace").splitlines()
                    stats = next((line for line in lines if line.startswith("audit sink stats:")), "")
                    stack.sink_stats += f"{arm}: {stats}\n" if stats else ""
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
