"""`mcp-gateway issuer` and `mcp-gateway token`: running the development issuer and minting a token by hand."""

from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import urlsplit

from mcp_gateway.cli_errors import explain, port_number
from mcp_gateway.errors import ConfigError


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `issuer` and `token` subcommands; each sets `func(args) -> int`."""
    issuer = subparsers.add_parser(
        "issuer",
        help="run the local development OAuth issuer (DEVELOPMENT ONLY)",
        description="Serve a client_credentials-only OAuth authorization server for demos and tests.",
    )
    issuer.add_argument("--config", default="./issuer.toml", help="issuer TOML (default: ./issuer.toml)")
    issuer.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    issuer.add_argument(
        "--port", type=port_number, default=None, help="port (default: the issuer URL's port, else 9000)"
    )
    issuer.set_defaults(func=run_issuer)

    token = subparsers.add_parser(
        "token",
        help="mint an access token with the development issuer's key",
        description="Print a signed access token for a client configured in the issuer TOML.",
    )
    token.add_argument("--issuer-config", default="./issuer.toml", help="issuer TOML (default: ./issuer.toml)")
    token.add_argument("--client", required=True, help="client id from [clients.ID]")
    token.add_argument("--scope", default=None, help='space-separated scopes, e.g. "tools:call tools:read"')
    token.add_argument("--resource", required=True, help="the resource the token is for, e.g. {public_url}/NAME/mcp")
    token.set_defaults(func=print_token)


def run_issuer(args: argparse.Namespace) -> int:
    import uvicorn

    from mcp_gateway.devissuer.config import load_issuer_config
    from mcp_gateway.devissuer.server import create_issuer_app

    try:
        config = load_issuer_config(args.config)
    except ConfigError as exc:
        return _refuse(exc, "--config", args.config)
    port = args.port if args.port is not None else (urlsplit(config.issuer).port or 9000)
    uvicorn.run(create_issuer_app(config), host=args.host, port=port, log_level="info")
    return 0


def print_token(args: argparse.Namespace) -> int:
    from mcp_gateway.devissuer.config import load_issuer_config
    from mcp_gateway.devissuer.server import TokenRequestError, mint_token

    try:
        config = load_issuer_config(args.issuer_config)
        scopes = args.scope.split(" ") if args.scope else None
        token = mint_token(config, args.client, scopes=scopes, resource=args.resource, now=time.time())
    except ConfigError as exc:
        return _refuse(exc, "--issuer-config", args.issuer_config)
    except TokenRequestError as exc:
        print(f"error: {exc.error}: {exc.description}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _refuse(exc: ConfigError, option: str, path: str) -> int:
    code, message = explain(exc, config_option=(option, path))
    print(message, file=sys.stderr)
    return code
