"""The admin's policy commands: `mcp-gateway policy test CASES.toml` and `mcp-gateway policy replay`.

Both decide with the gateway's own deciders (`offline.PolicyBundle`): the allowlist's scope rules, then the
pinned input schemas (`--tools`: saved tools/list results checked against `tools_sha256`), then Cedar.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Final

from mcp_gateway.audit.query import QueryFilters, parse_time
from mcp_gateway.audit.store import AuditLocation, AuditReadError, SchemaError
from mcp_gateway.audit.stores import audit_location, open_audit_reader
from mcp_gateway.config import GatewayConfig, ServerEntry, load_allowlist, load_config
from mcp_gateway.errors import ConfigError
from mcp_gateway.policy.cases import load_cases, run_cases
from mcp_gateway.policy.cedar import ArgumentsCheck
from mcp_gateway.policy.offline import PolicyBundle
from mcp_gateway.policy.pinned_tools import load_pinned_schemas
from mcp_gateway.policy.replay import render, replay
from mcp_gateway.policy.scopes import ScopeHierarchy

EXIT_OK: Final = 0
EXIT_DIFFERENT: Final = 1
EXIT_USAGE: Final = 2

# An arguments check used when no `--tools` file is given (a seam for tests; None: no schema check).
arguments_check: ArgumentsCheck | None = None


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `policy` command group to a top-level `mcp-gateway` parser."""
    policy = subparsers.add_parser("policy", help="test policies against example calls; replay the audit log")
    policy.set_defaults(func=lambda args: _usage(policy))
    commands = policy.add_subparsers(metavar="COMMAND")

    test = commands.add_parser(
        "test",
        help="decide example calls and compare with the expected decisions; exit 1 on any difference",
        description="Run each [[case]] of CASES through the allowlist's scope rules and the Cedar policies, "
        "print PASS or FAIL per case, and exit 1 if any decision differs from the expected one.",
    )
    test.add_argument("cases", metavar="CASES", type=Path, help="a TOML file of [[case]] tables")
    _add_policy_sources(test, required=False)
    test.set_defaults(func=run_test)

    rep = commands.add_parser(
        "replay",
        help="re-decide recorded calls under a candidate policy; print those whose decision changes",
        description="Re-decide every recorded tools/call, resources/read and prompts/get under the candidate "
        "allowlist (and Cedar policies) and print the calls whose decision would change, grouped by rule, agent "
        "and tool. Calls whose arguments were not stored are counted as undecidable when the candidate reads them.",
    )
    _add_policy_sources(rep, required=True)
    rep.add_argument("--database", metavar="PATH", help="the audit database; overrides [audit] in gateway.toml")
    rep.add_argument("--since", metavar="WHEN", help="30m, 1h, 7d, or an ISO 8601 time (default: all)")
    rep.add_argument("--format", choices=("table", "json", "csv"), default="table")
    rep.set_defaults(func=run_replay)


def _add_policy_sources(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--config", default="./gateway.toml", metavar="PATH", help="default: %(default)s")
    parser.add_argument(
        "--allowlist", metavar="FILE", type=Path, required=required, help="an allowlist instead of the configured one"
    )
    parser.add_argument("--cedar", metavar="FILE", type=Path, help="Cedar policies to use instead of [policy] cedar")
    parser.add_argument(
        "--tools",
        metavar="[SERVER=]FILE",
        action="append",
        default=[],
        help="a saved tools/list result (JSON) of SERVER; definitions that hash to their tools_sha256 pin "
        "give the input schemas tools/call arguments are checked against (repeatable; SERVER= may be left "
        "out when the allowlist names one server)",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _bundle(args: argparse.Namespace) -> tuple[PolicyBundle, GatewayConfig | None]:
    """The policy the command judges with: gateway.toml's, with --allowlist and --cedar in place of its own."""
    config = load_config(args.config) if Path(args.config).is_file() else None
    if config is None and args.allowlist is None:
        raise ConfigError(args.config, "(file)", "not found; pass --config PATH or --allowlist FILE")
    servers: dict[str, ServerEntry] = dict(config.servers) if config is not None else {}
    if args.allowlist is not None:
        servers, _ = load_allowlist(args.allowlist)
    hierarchy = ScopeHierarchy(config.scope_implications if config is not None else None)
    cedar = args.cedar
    if cedar is None and config is not None and config.policy.cedar:
        cedar = config.path_for(config.policy.cedar)
    # The pinned input schemas, as the live catalogue uses them: only definitions that match their pins.
    check = load_pinned_schemas(args.tools, servers) if args.tools else arguments_check
    return PolicyBundle.from_files(servers, hierarchy, cedar, check), config


def run_test(args: argparse.Namespace) -> int:
    bundle, _ = _bundle(args)
    results = run_cases(load_cases(args.cases), bundle)
    for result in results:
        print(result.line())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return EXIT_DIFFERENT if failed else EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    bundle, config = _bundle(args)
    location = _location(args, config)
    try:
        since = parse_time(args.since, time.time()) if args.since else None
    except ValueError as exc:
        print(f"mcp-gateway: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rows = open_audit_reader(location).query(QueryFilters(since=since))
        report = replay(rows, bundle)
    except FileNotFoundError:
        print(f"mcp-gateway: no audit log at {location.target}", file=sys.stderr)
        return EXIT_USAGE
    except (SchemaError, AuditReadError, ValueError) as exc:
        print(f"mcp-gateway: {location.target}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(render(report, args.format))
    return EXIT_OK


def _location(args: argparse.Namespace, config: GatewayConfig | None) -> AuditLocation:
    if args.database:
        return AuditLocation("sqlite", str(Path(args.database).resolve()))
    if config is None:
        raise ConfigError(args.config, "(file)", "not found; pass --config PATH or --database PATH")
    audit = config.audit
    return audit_location(url=audit.url, database=audit.database, base_dir=config.base_dir)
