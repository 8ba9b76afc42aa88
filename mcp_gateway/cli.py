"""The `mcp-gateway` command line: serve, demo, and the subsystems' own commands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mcp_gateway.errors import ConfigError


def _serve(args: argparse.Namespace) -> int:
    from mcp_gateway.app import create_app
    from mcp_gateway.config import load_config
    from mcp_gateway.transport.server import build_server

    config = load_config(args.config)
    app = create_app(config, tune_gc=True)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
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
    serve.add_argument("--port", type=int, default=None, help="override the bind port")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="load gateway.toml and the allowlist, report errors")
    check.add_argument("--config", default="./gateway.toml")
    check.set_defaults(func=_check)

    from mcp_gateway import demo

    demo.add_commands(sub)
    from mcp_gateway.audit import cli as audit_cli
    from mcp_gateway.devissuer import cli as devissuer_cli
    from mcp_gateway.identity import cli as identity_cli

    for module in (devissuer_cli, audit_cli, identity_cli):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request is noise in a CLI
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
