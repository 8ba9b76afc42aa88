"""What overhead.py prints: the cells' figures, the floor, the phases, old vs new tree, and the targets.

Targets (issue #12, default config: JWT, scopes, durable audit with synchronous=FULL), for this tree's
gateway with audit on, every one a ratio measured within the run:

- throughput >= 0.90x direct at C >= 8 (audit off too: issue #2);
- CPU share = gateway CPU per call / the upstream's CPU per call (direct arm, same cell) <= 0.20 at C >= 8,
  <= 0.30 at C = 1;
- added p50 at C = 1 <= 0.5 ms plus one durable write on the audit's disk (measured in the same run);
  audit off: <= 0.5 ms (issue #2);
- audit on <= 1.25x audit off in gateway CPU per call at C >= 8.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _load import ArmResult, percentile
from _stack import CLK_TCK

RATIO_MIN = 0.90
SHARE_MAX = 0.20  # at C >= 8
SHARE_MAX_C1 = 0.30
ADDED_P50_MAX_MS = 0.5  # plus one durable write with audit on
AUDIT_CPU_MAX = 1.25  # audit on / audit off, at C >= 8

GATEWAYS = ("gw-off", "gw-on", "root-off", "root-on")
LABEL = {"gw-off": "off", "gw-on": "on", "root-off": "root off", "root-on": "root on"}
PAIR = {"gw-on": "gw-off", "root-on": "root-off"}


@dataclass
class Cell:
    """One (era, concurrency, arm), summed over rounds (and each round kept, for spreads)."""

    calls: int = 0
    errors: int = 0
    errors_outside: int = 0
    seconds: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    cpu: dict[str, int] = field(default_factory=dict)  # tick (or ns, "ph*") deltas per key
    first_error: str | None = None
    rounds: list[tuple[int, float, dict[str, int]]] = field(default_factory=list)  # calls, seconds, deltas

    def add(self, result: ArmResult) -> None:
        self.calls += result.calls
        self.errors += result.errors
        self.errors_outside += result.errors_outside
        self.seconds += result.seconds
        self.latencies_ns += result.latencies_ns
        self.first_error = self.first_error or result.first_error
        assert result.probes is not None
        before, after = result.probes
        delta = {key: after[key] - before.get(key, 0) for key in after}
        for key, value in delta.items():
            self.cpu[key] = self.cpu.get(key, 0) + value
        self.rounds.append((result.calls, result.seconds, delta))

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def per_round(self) -> list[float]:
        return [calls / seconds if seconds else 0.0 for calls, seconds, _ in self.rounds]

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ns), q) / 1e6

    def cpu_us_per_call(self, proc: str) -> float:
        return self.cpu.get(proc, 0) / CLK_TCK / self.calls * 1e6 if self.calls else float("nan")

    def round_cpu_us(self, proc: str) -> list[float]:
        return [d.get(proc, 0) / CLK_TCK / c * 1e6 if c else float("nan") for c, _, d in self.rounds]

    def foreign_cores(self) -> float:
        ours = sum(v for k, v in self.cpu.items() if k != "system" and "." not in k and not k.startswith("ph"))
        return max(0, self.cpu.get("system", 0) - ours) / CLK_TCK / self.seconds if self.seconds else 0.0


Cells = dict[tuple[str, int, str], Cell]


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _fmt_spread(median: float, low: float, high: float, fmt: str = ".2f") -> str:
    return f"{median:{fmt}}" + ("" if low == high else f" ({low:{fmt}}-{high:{fmt}})")


def build_rows(cells: Cells, eras: list[str], concurrency: list[int], arms: list[str]) -> list[dict[str, Any]]:
    rows = []
    for era in eras:
        for c in concurrency:
            direct = cells[(era, c, "direct")]
            up_direct = direct.cpu_us_per_call("upstream")
            up_rounds = direct.round_cpu_us("upstream")
            for arm in (a for a in GATEWAYS if a in arms):
                gw = cells[(era, c, arm)]
                cpu = gw.cpu_us_per_call(arm)
                ratios = [g / d if d else float("nan") for g, d in zip(gw.per_round, direct.per_round, strict=True)]
                shares = [g / u if u else float("nan") for g, u in zip(gw.round_cpu_us(arm), up_rounds, strict=True)]
                pair = PAIR.get(arm)
                off_cpu = cells[(era, c, pair)].cpu_us_per_call(pair) if pair else None
                row: dict[str, Any] = {
                    "era": era,
                    "concurrency": c,
                    "arm": arm,
                    "audit": LABEL[arm],
                    "direct_per_s": direct.throughput,
                    "gateway_per_s": gw.throughput,
                    # Median of per-round ratios: each round's arms ran back to back, so a burst of outside
                    # load spoils one round's ratio, not the figure.
                    "ratio": _spread(ratios),
                    "direct_p50_ms": direct.p(50),
                    "added_p50_ms": gw.p(50) - direct.p(50),
                    "added_p99_ms": gw.p(99) - direct.p(99),
                    "gateway_cpu_us": cpu,
                    # Outside the event loop's thread: the audit writer. Ticks, so near 0 is approximate.
                    "gateway_cpu_threads_us": max(0.0, cpu - gw.cpu_us_per_call(f"{arm}.main")),
                    "upstream_cpu_us_direct": up_direct,
                    "upstream_cpu_us_gateway": gw.cpu_us_per_call("upstream"),
                    "share": cpu / up_direct if up_direct else float("nan"),
                    "share_rounds": _spread(shares),
                    "loadgen_cpu_us": gw.cpu_us_per_call("self"),
                    "audit_cpu_ratio": cpu / off_cpu if off_cpu else None,
                    "calls": gw.calls,
                    "errors": gw.errors + direct.errors,
                    "foreign_load_cores": max(gw.foreign_cores(), direct.foreign_cores()),
                    "first_error": gw.first_error or direct.first_error,
                }
                rows.append(row)
    return rows


def check_targets(rows: list[dict[str, Any]], durable_write_ms: float) -> list[tuple[str, str, str, str, bool]]:
    """(target, cell, value, limit, met) for this tree's gateway arms."""
    out = []
    for r in rows:
        if r["arm"] not in ("gw-on", "gw-off"):
            continue
        cell = f"{r['era']} C={r['concurrency']} audit {r['audit']}"
        c = r["concurrency"]
        if c >= 8:
            out.append(
                ("throughput ratio", cell, f"{r['ratio'][0]:.2f}", f">= {RATIO_MIN:.2f}", r["ratio"][0] >= RATIO_MIN)
            )
        if c == 1:
            limit = ADDED_P50_MAX_MS + (durable_write_ms if r["arm"] == "gw-on" else 0.0)
            out.append(
                ("added p50 ms", cell, f"{r['added_p50_ms']:+.2f}", f"<= {limit:.2f}", r["added_p50_ms"] <= limit)
            )
        if r["arm"] == "gw-on":
            limit = SHARE_MAX if c >= 8 else SHARE_MAX_C1
            out.append(("CPU share of upstream", cell, f"{r['share']:.2f}", f"<= {limit:.2f}", r["share"] <= limit))
            if c >= 8 and r["audit_cpu_ratio"] is not None:
                ok = r["audit_cpu_ratio"] <= AUDIT_CPU_MAX
                out.append(("audit on / off CPU", cell, f"{r['audit_cpu_ratio']:.2f}", f"<= {AUDIT_CPU_MAX:.2f}", ok))
    return out


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def main_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "era", "C", "audit", "direct/s", "gw/s", "ratio med (range)", "+p50 ms", "+p99 ms", "gw CPU µs/call",
        "of it, other threads", "share of upstream med (range)", "on/off CPU", "upstream µs direct→via gw",
        "gen µs", "errors", "other load",
    ]  # fmt: skip
    lines = []
    for r in rows:
        audit = "" if r["audit_cpu_ratio"] is None else f"{r['audit_cpu_ratio']:.2f}"
        lines.append(
            [
                r["era"],
                str(r["concurrency"]),
                r["audit"],
                f"{r['direct_per_s']:.0f}",
                f"{r['gateway_per_s']:.0f}",
                _fmt_spread(*r["ratio"]),
                f"{r['added_p50_ms']:+.2f}",
                f"{r['added_p99_ms']:+.2f}",
                f"{r['gateway_cpu_us']:.0f}",
                f"{r['gateway_cpu_threads_us']:.0f}",
                f"{r['share']:.2f} ({r['share_rounds'][1]:.2f}-{r['share_rounds'][2]:.2f})",
                audit,
                f"{r['upstream_cpu_us_direct']:.0f}→{r['upstream_cpu_us_gateway']:.0f}",
                f"{r['loadgen_cpu_us']:.0f}",
                str(r["errors"]),
                f"{r['foreign_load_cores']:.2f}",
            ]
        )
    return _table(header, lines)


def floor_table(cells: Cells, rows: list[dict[str, Any]], eras: list[str], concurrency: list[int]) -> str:
    """The floor per cell: uvicorn + a bare ASGI app, a bare TCP relay, and the gateway above the floor.

    floor = ASGI floor + half the relay: a gateway pays uvicorn's client side (the ASGI floor) and the
    upstream side of a relay (about half of the relay's two reads and two writes)."""
    header = [
        "era", "C", "upstream µs", "ASGI floor µs", "TCP relay µs", "floor µs (ASGI + ½ relay)", "floor share",
        "gw off µs = floor +", "gw on µs = floor +", "gw on share",
    ]  # fmt: skip
    lines = []
    for era in eras:
        for c in concurrency:
            up = cells[(era, c, "direct")].cpu_us_per_call("upstream")
            asgi = cells[(era, c, "floor-asgi")].cpu_us_per_call("floor-asgi")
            relay = cells[(era, c, "floor-relay")].cpu_us_per_call("floor-relay")
            floor = asgi + relay / 2
            by_arm = {r["arm"]: r for r in rows if r["era"] == era and r["concurrency"] == c}
            off, on = by_arm["gw-off"]["gateway_cpu_us"], by_arm["gw-on"]["gateway_cpu_us"]
            lines.append(
                [
                    era,
                    str(c),
                    f"{up:.0f}",
                    f"{asgi:.0f}",
                    f"{relay:.0f}",
                    f"{floor:.0f}",
                    f"{floor / up:.2f}",
                    f"{off:.0f} = {floor:.0f} + {off - floor:.0f}",
                    f"{on:.0f} = {floor:.0f} + {on - floor:.0f}",
                    f"{on / up:.2f}",
                ]
            )
    return _table(header, lines)


PHASES = (
    ("parse", "parse"),
    ("authenticate", "authenticate"),
    ("session", "session"),
    ("decide", "decide"),
    ("audit intent", "audit intent"),
    ("exchange", "exchange (request out)"),
    ("upstream callbacks", "exchange (response in: upstream callbacks)"),
    ("relay", "relay"),
    ("audit outcome", "audit outcome"),
    ("audit wake-up", "audit wake-up (writer's hand-back on the loop)"),
)
_INSIDE_ENDPOINT = ("parse", "authenticate", "session", "decide", "audit intent", "exchange", "relay", "audit outcome")


def phase_table(cells: Cells, eras: list[str], concurrency: list[int]) -> str:
    """Per-phase CPU µs per call of the instrumented audit-on gateway (bench/_phases.py), per cell."""
    keys = [(era, c) for era in eras for c in concurrency]
    figures: dict[str, list[str]] = {}
    for era, c in keys:
        d = cells[(era, c, "gw-phases")].cpu
        calls = d.get("phn:endpoint", 0) or 1

        def us(ns: float, n: int = calls) -> float:
            return ns / 1000 / n

        inside = sum(d.get(f"ph:{k}", 0) for k in _INSIDE_ENDPOINT)
        loop = d.get("ph.process", 0) - d.get("ph.threads", 0)
        outside = loop - d.get("ph:endpoint", 0) - d.get("ph:upstream callbacks", 0) - d.get("ph:audit wake-up", 0)
        values = {key: us(d.get(f"ph:{key}", 0)) for key, _ in PHASES}
        values["pipeline, other"] = us(d.get("ph:endpoint", 0) - inside)
        values["server and loop (uvicorn, uvloop, other tasks)"] = us(outside)
        values["audit writer thread"] = us(d.get("ph.threads", 0))
        values["  of it, commit_group (seal, insert, commit, fsync)"] = us(d.get("ph:audit commit", 0))
        values["total (instrumented process CPU)"] = us(d.get("ph.process", 0))
        for name, value in values.items():
            label = dict(PHASES).get(name, name)
            figures.setdefault(label, []).append(f"{value:.0f}")
    header = ["phase (µs CPU per call)"] + [f"{era} C={c}" for era, c in keys]
    return _table(header, [[name, *vals] for name, vals in figures.items()])


def root_table(cells: Cells, rows: list[dict[str, Any]], eras: list[str], concurrency: list[int]) -> str:
    """This tree against `--root`'s, per cell: CPU per call and throughput, per-round ratios new / root."""
    header = ["era", "C", "audit", "CPU µs new / root", "CPU new÷root med (range)", "calls/s new÷root med (range)"]
    lines = []
    for era in eras:
        for c in concurrency:
            for new, old in (("gw-off", "root-off"), ("gw-on", "root-on")):
                a, b = cells[(era, c, new)], cells[(era, c, old)]
                cpu = [x / y for x, y in zip(a.round_cpu_us(new), b.round_cpu_us(old), strict=True) if y]
                tput = [x / y for x, y in zip(a.per_round, b.per_round, strict=True) if y]
                lines.append(
                    [
                        era,
                        str(c),
                        LABEL[new],
                        f"{a.cpu_us_per_call(new):.0f} / {b.cpu_us_per_call(old):.0f}",
                        _fmt_spread(*_spread(cpu)),
                        _fmt_spread(*_spread(tput)),
                    ]
                )
    return _table(header, lines)


def targets_table(checks: list[tuple[str, str, str, str, bool]]) -> str:
    return _table(
        ["target", "cell", "value", "limit", "met"],
        [[t, cell, v, limit, "PASS" if ok else "**FAIL**"] for t, cell, v, limit, ok in checks],
    )


def text(markdown: str) -> str:
    """A Markdown table as aligned text for the console."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if not line.startswith("|---")]
    rows = [[cell.strip() for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    fmt: Callable[[list[str]], str] = lambda row: "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))  # noqa: E731
    return "\n".join(fmt(row) for row in rows)
