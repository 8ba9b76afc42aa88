"""What one policy decision costs, with and without Cedar, measured in the same run.

    python bench/policy_decision.py            # about 10 seconds
    python bench/policy_decision.py --rounds 9 --calls 20000

Four deciders judge the same `tools/call` inputs (the gateway's own classes, no I/O):

- `scopes`: the allowlist's scope rules alone (`ScopeDecider`), what a gateway without `[policy] cedar` runs;
- `cedar, untargeted`: `CedarDecider` with the worked example's five policies, for a tool no policy targets
  (`echo`): the scope rules plus the scope index lookup that lets it skip Cedar;
- `cedar, targeted`: the same decider for `transfer`, which the `transfer-limit` forbid targets: one
  `cedarpy.is_authorized` call on the policy set parsed once at start-up;
- `cedar + shadow, targeted`: the same with a shadow set that also targets `transfer` (two evaluations).

Each figure is the median over rounds of µs per decision; the ratio column divides by `scopes` from the
same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_gateway.config import ServerEntry
from mcp_gateway.policy.cedar import CedarDecider, CedarPolicies
from mcp_gateway.policy.decider import Decider, DecisionInput, ScopeDecider
from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.scopes import ScopeHierarchy
from tests.policy._cedar_stack import ARGUMENTS_SCHEMA, policies


def _input(tool: str, arguments: dict[str, object]) -> DecisionInput:
    return DecisionInput(
        server="everything",
        method="tools/call",
        params={"name": tool, "arguments": arguments},
        scopes=frozenset({"tools:call"}),
        agent_id="agent-a",
        delegating_user="alice",
        issuer="https://issuer.example",
        name=tool,
        arguments=arguments,
        era="2025-11-25",
        now=time.time(),
        client_address="127.0.0.1",
    )


def _per_call_us(decide: Callable[[DecisionInput], object], request: DecisionInput, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        decide(request)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, text in (("p", policies(time.time())), ("s", policies(time.time()).replace("> 100", "> 50"))):
            (directory / f"{name}.cedar").write_text(text)
            (directory / f"{name}.cedarschema").write_text(ARGUMENTS_SCHEMA)
        enforced, shadow = CedarPolicies.load(directory / "p.cedar"), CedarPolicies.load(directory / "s.cedar")
    entry = ServerEntry(name="everything", url="http://127.0.0.1:9/mcp", default_scopes=("tools:call",))
    scopes = ScopeDecider(ServerPolicy(entry, ScopeHierarchy()))
    echo, transfer = _input("echo", {"message": "hi"}), _input("transfer", {"amount": 70, "to": "savings"})
    cells: list[tuple[str, Decider, DecisionInput]] = [
        ("scopes", scopes, transfer),
        ("cedar, untargeted", CedarDecider(scopes, enforced), echo),
        ("cedar, targeted", CedarDecider(scopes, enforced), transfer),
        ("cedar + shadow, targeted", CedarDecider(scopes, enforced, shadow), transfer),
    ]
    results: dict[str, list[float]] = {name: [] for name, _, _ in cells}
    for _ in range(args.rounds):  # interleaved, so drift in the machine's load hits every cell alike
        for name, decider, request in cells:
            results[name].append(_per_call_us(decider.decide, request, args.calls))
    base = statistics.median(results["scopes"])
    print(f"{'decider':<28}{'µs/decision':>12}{'x scopes':>10}")
    for name, _, _ in cells:
        median = statistics.median(results[name])
        print(f"{name:<28}{median:>12.2f}{median / base:>10.1f}")


if __name__ == "__main__":
    main()
