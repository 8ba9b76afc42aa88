"""`mcp-gateway approvals list | approve ID | deny ID`: the approvals API of a running gateway, from a terminal.

The token (for the resource `{public_url}/approvals`, with the tool's `approver_scope`) comes from `--token`
or the environment variable MCP_GATEWAY_APPROVER_TOKEN; it is sent in the Authorization header only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Final

from mcp_gateway.approvals.rules import API_PATH
from mcp_gateway.audit.safe_text import visible
from mcp_gateway.errors import CommandError

TOKEN_ENV: Final = "MCP_GATEWAY_APPROVER_TOKEN"


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = subparsers.add_parser("approvals", help="list, approve or deny tool calls awaiting approval")
    commands = approvals.add_subparsers(metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="the calls awaiting a decision that your token may decide")
    _common(listing)
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=run_list)
    for verdict in ("approve", "deny"):
        command = commands.add_parser(verdict, help=f"{verdict} the held call ID (once; recorded in the audit log)")
        _common(command)
        command.add_argument("id", help="the approval id `approvals list` shows")
        command.add_argument("--reason", default=None, help="why (recorded with your decision)")
        command.set_defaults(func=run_decide, verdict=verdict)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="./gateway.toml", help="gateway.toml, for public_url (default ./)")
    parser.add_argument("--url", default=None, help="the gateway's public URL (default: public_url from --config)")
    parser.add_argument("--token", default=None, help=f"approver's bearer token (default: ${TOKEN_ENV})")


def _endpoint(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/") + API_PATH
    from mcp_gateway.config import load_config

    return load_config(args.config).public_url + API_PATH


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise CommandError(f"no token: pass --token TOKEN or set {TOKEN_ENV} (a token for {{public_url}}{API_PATH})")
    return str(token).strip()


def _request(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    import httpx2

    try:
        with httpx2.Client(timeout=30, follow_redirects=False) as http:
            response = http.request(method, url, json=body, headers={"authorization": f"Bearer {token}"})
    except httpx2.HTTPError as exc:
        raise CommandError(f"cannot reach the gateway at {url}: {type(exc).__name__}") from None
    try:
        value = response.json()
    except ValueError:
        value = None
    if response.status_code != 200:
        message = value.get("message") if isinstance(value, dict) else None
        raise CommandError(f"the gateway refused ({response.status_code}): {message or response.reason_phrase}")
    return value


def run_list(args: argparse.Namespace) -> int:
    answer = _request("GET", _endpoint(args), _token(args))
    items = answer.get("approvals", []) if isinstance(answer, dict) else []
    if args.format == "json":
        for item in items:
            print(json.dumps(item, ensure_ascii=True))
        return 0
    if not items:
        print("no calls are awaiting approval")
        return 0
    now = time.time()
    for item in items:
        left = max(0, int(float(item.get("expires_at", now)) - now))
        print(f"{visible(str(item.get('id')))}  {visible(str(item.get('server')))}/{visible(str(item.get('tool')))}")
        for label, key in (
            ("agent", "agent_id"),
            ("on behalf of", "delegating_user"),
            ("arguments", "arguments"),
            ("arguments sha256", "arguments_sha256"),
            ("request context", "request_context"),
            ("approver scope", "approver_scope"),
        ):
            value = item.get(key)
            if value is not None:
                print(f"    {label:<17}{visible(str(value))}")
        print(f"    {'expires in':<17}{left} s")
    return 0


def run_decide(args: argparse.Namespace) -> int:
    if not args.id.strip() or any(c in args.id for c in "/?#%"):
        raise CommandError("an approval id is one path segment, as `approvals list` shows it")
    body = {"decision": args.verdict, "reason": args.reason}
    answer = _request("POST", f"{_endpoint(args)}/{args.id}", _token(args), body)
    decision, approver = visible(str(answer.get("decision"))), visible(str(answer.get("approver")))
    print(f"{decision}: {visible(args.id)} (recorded as {approver})")
    return 0
