"""The `mcp-gateway` command line: serve, demo, and the subsystems' own commands."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from mcp_gateway.cli_errors import explain, port_number


def _serve(args: argparse.Namespace) -> int:
    from mcp_gateway.app import create_app
    from mcp_gateway.config import load_config
    from mcp_gateway.server import build_server

    config = load_config(args.config)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    if args.workers != 1:
        from mcp_gateway.workers import check_workers, serve_workers

        check_workers(config, args.workers, config_file=args.config)
        level = args.log_level or config.logging.level
        return serve_workers(config, args.workers, host=host, port=port, log_level=level)
    app = create_app(config, tune_gc=True)
    server = build_server(app, config, host=host, port=port, log_level=args.log_level)
    server.run()
    return 0 if server.started else 1


def _check(args: argparse.Namespace) -> int:
    from mcp_gateway.config import load_config

    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.servers)} servers, policy version {config.policy_version[:12]})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description="An MCP-native security proxy.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default="./gateway.toml", help="path to gateway.toml")
    serve.add_argument("--host", default=None, help="override the bind host")
    serve.add_argument("--port", type=port_number, default=None, help="override the bind port")
    serve.add_argument("--log-level", default=None, help="override [logging] level")
    serve.add_argument("--workers", type=int, default=1, help="processes serving the port (default 1)")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="load gateway.toml and the allowlist, report errors")
    check.add_argument("--config", default="./gateway.toml")
    check.set_defaults(func=_check)

    from mcp_gateway import demo, doctor, reload
    from mcp_gateway.approvals import cli as approvals_cli

    demo.add_commands(sub)
    reload.add_commands(sub)
    doctor.add_commands(sub)
    from mcp_gateway.audit import cli as audit_cli
    from mcp_gateway.devissuer import cli as devissuer_cli
    from mcp_gateway.identity import cli as identity_cli
    from mcp_gateway.policy import cli as policy_cli

    for module in (devissuer_cli, audit_cli, identity_cli, policy_cli, approvals_cli):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request is noise in a CLI
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; every failure becomes one line on stderr and an exit status, never a
    traceback: 2 for inputs to fix (cli_errors.explain names the fix), 70 for a defect in the gateway."""
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mcp-gateway ... | head`: the reader has what it wanted (Python docs, "Note on SIGPIPE").
        _discard_stdout()
        return 0
    except Exception as exc:
        code, message = explain(exc, config_option=_config_option(args))
        print(message, file=sys.stderr)
        return code


def _config_option(args: argparse.Namespace) -> tuple[str, str] | None:
    for option in ("issuer_config", "config"):
        value = getattr(args, option, None)
        if isinstance(value, str):
            return "--" + option.replace("_", "-"), value
    return None


def _discard_stdout() -> None:
    # stdout may be no file descriptor (captured in tests): then nothing flushes to a closed pipe anyway.
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
