"""`mcp-gateway demo`: the example upstream, a development token issuer and the gateway, together."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from mcp_gateway.approvals.rules import API_PATH
from mcp_gateway.cli_errors import port_number
from mcp_gateway.errors import CommandError

if TYPE_CHECKING:
    from mcp_gateway.devissuer.config import IssuerConfig

_DEMO_SCOPES = ("tools:read", "tools:call", "resources:read", "prompts:read", "admin")
_APPROVER_SCOPE = "approvals:decide"


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the demo, which stops all parts together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="run the example upstream, a dev token issuer and the gateway")
    demo.add_argument("--dir", default=".demo", help="where the demo's config, keys and audit log are written")
    demo.add_argument("--gateway-port", type=port_number, default=8080)
    demo.add_argument("--issuer-port", type=port_number, default=9000)
    demo.add_argument("--upstream-port", type=port_number, default=3001)
    demo.add_argument(
        "--no-delegation", action="store_true", help="skip the delegated whoami call the demo makes and prints"
    )
    demo.add_argument("--config", default=None, help="unused; accepted like every other subcommand")
    demo.set_defaults(func=run_demo)


def write_demo_files(directory: Path, *, gateway_port: int, issuer_port: int, upstream_port: int) -> str:
    """Write issuer.toml, gateway.toml and server_allowlist.toml; returns the demo client's secret."""
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / "client-secret"
    if secret_file.exists():
        client_secret = secret_file.read_text().strip()
    else:
        client_secret = secrets.token_urlsafe(24)
        secret_file.write_text(client_secret + "\n")
        secret_file.chmod(0o600)
    gateway_secret_file = directory / "gateway-client-secret"
    if not gateway_secret_file.exists():
        gateway_secret_file.write_text(secrets.token_urlsafe(24) + "\n")
        gateway_secret_file.chmod(0o600)
    gateway_secret = gateway_secret_file.read_text().strip()
    issuer = f"http://127.0.0.1:{issuer_port}"
    upstream = f"http://127.0.0.1:{upstream_port}/mcp"
    scopes = ", ".join(f'"{s}"' for s in _DEMO_SCOPES)
    (directory / "issuer.toml").write_text(
        f"""# Development token issuer: NOT for production use.
issuer = "{issuer}"
signing_key = "issuer-key.pem"
algorithm = "ES256"
token_lifetime_seconds = 3600

[clients.demo-agent]
secret = "{client_secret}"
scopes = [{scopes}]
default_scopes = ["tools:read", "tools:call"]
sub = "alice@example.com"

# A person who approves held calls (another sub than the agent's user) and reads the audit log.
[clients.demo-approver]
secret = "{client_secret}"
scopes = ["{_APPROVER_SCOPE}", "audit:read"]
sub = "bob@example.com"

# The gateway itself: it exchanges an agent's token (RFC 8693) for one good for the upstream only.
[clients.gateway]
secret = "{gateway_secret}"
scopes = [{scopes}]

[clients.gateway.may_exchange]
demo-agent = ["{upstream}"]
"""
    )
    (directory / "gateway.toml").write_text(
        f"""public_url = "http://127.0.0.1:{gateway_port}"
host = "127.0.0.1"
port = {gateway_port}
allowlist = "server_allowlist.toml"
scope_implications = {{ admin = ["tools:call", "tools:read"] }}

[auth]
issuer = "{issuer}"
jwks_uri = "{issuer}/jwks.json"
algorithms = ["ES256", "RS256"]
leeway_seconds = 60
max_token_lifetime_seconds = 3600

[audit]
database = "audit.db"

[rate_limits]
per_agent = {{ rate = 50.0, burst = 100 }}
"""
    )
    (directory / "server_allowlist.toml").write_text(
        f"""[servers.everything]
url = "http://127.0.0.1:{upstream_port}/mcp"
server_name = "everything"
default_scopes = ["tools:call"]

[servers.everything.tool_scopes]
echo = ["tools:read"]
whoami = ["tools:read"]
delete_everything = ["admin"]

[servers.everything.resource_scopes]
"file:///public/" = ["resources:read"]

[servers.everything.prompt_scopes]
summarize = ["prompts:read"]

# People in the loop: a call of delete_everything waits until someone holding this scope approves it.
[servers.everything.approvals]
delete_everything = {{ approver_scope = "{_APPROVER_SCOPE}", timeout_seconds = 300 }}

# Zero standing credentials: each call carries the agent's token exchanged for this upstream and scope.
[servers.everything.credentials]
type = "token_exchange"
token_url = "{issuer}/token"
client_id = "gateway"
client_secret_file = "gateway-client-secret"
scope = "operation"
"""
    )
    return client_secret


def _example_server_path() -> Path:
    path = Path(__file__).resolve().parent.parent / "examples" / "everything_server.py"
    if not path.exists():
        raise SystemExit(f"cannot find the example upstream at {path}; run the demo from a checkout")
    return path


async def _wait_port(port: int, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the example upstream did not start on port {port}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


def _bind(port: int, option: str) -> socket.socket:
    """A listening socket on 127.0.0.1:`port`, bound before anything starts, so a port in use is a clear
    error naming the option to change rather than a server that dies after the others started."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise CommandError(
            f"port {port} on 127.0.0.1 cannot be used ({exc.strerror or exc}); pick another with {option} N"
        ) from None
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket, what: str) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:
        # uvicorn exits the process when its start-up fails, after logging why; the demo stops instead.
        raise CommandError(f"the {what} did not start (its log above says why)") from None


async def _run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    client_secret = write_demo_files(
        directory, gateway_port=args.gateway_port, issuer_port=args.issuer_port, upstream_port=args.upstream_port
    )
    with contextlib.ExitStack() as sockets:
        issuer_socket = sockets.enter_context(_bind(args.issuer_port, "--issuer-port"))
        gateway_socket = sockets.enter_context(_bind(args.gateway_port, "--gateway-port"))
        # The upstream binds in its own process; a port someone else holds would be mistaken for it.
        _bind(args.upstream_port, "--upstream-port").close()
        return await _run_parts(args, directory, client_secret, issuer_socket, gateway_socket)


async def _run_parts(
    args: argparse.Namespace,
    directory: Path,
    client_secret: str,
    issuer_socket: socket.socket,
    gateway_socket: socket.socket,
) -> int:
    from mcp_gateway.app import create_app
    from mcp_gateway.config import load_config
    from mcp_gateway.devissuer.config import load_issuer_config
    from mcp_gateway.devissuer.server import create_issuer_app, mint_token

    issuer_config = load_issuer_config(directory / "issuer.toml")
    config = load_config(directory / "gateway.toml")
    upstream = subprocess.Popen(
        [
            sys.executable, str(_example_server_path()), "--port", str(args.upstream_port), "--log-level", "warning",
            # The upstream verifies its own tokens: issued by the demo issuer, for itself only.
            "--resource", f"http://127.0.0.1:{args.upstream_port}/mcp",
            "--trust", f"{issuer_config.issuer}={issuer_config.issuer}/jwks.json",
        ]
    )  # fmt: skip
    servers: list[uvicorn.Server] = []
    try:
        await _wait_port(args.upstream_port, time.monotonic() + 20)
        issuer = _QuietServer(
            uvicorn.Config(
                create_issuer_app(issuer_config), host="127.0.0.1", port=args.issuer_port, log_level="warning"
            )
        )
        gateway = _QuietServer(
            uvicorn.Config(
                create_app(config),
                host="127.0.0.1",
                port=args.gateway_port,
                log_level="warning",
                http="httptools",
                server_header=False,
            )
        )
        servers = [issuer, gateway]
        tasks = [
            asyncio.create_task(_serve(issuer, issuer_socket, "token issuer")),
            asyncio.create_task(_serve(gateway, gateway_socket, "gateway")),
        ]
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        if all(s.started for s in servers):
            resource = config.resource_uri("everything")
            token = mint_token(
                issuer_config, "demo-agent", scopes=["tools:read", "tools:call"], resource=resource, now=time.time()
            )
            _print_banner(config.public_url, resource, issuer_config.issuer, client_secret, token, directory)
            _print_approval_walkthrough(config.public_url, resource, directory, issuer_config, mint_token)
            if not args.no_delegation:
                whoami = await _whoami(resource, token)
                print(f"A delegated call (whoami, as the upstream sees it): {whoami}\n", flush=True)
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        for task in tasks:  # a part that could not start: say why, instead of a quiet exit 0
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                raise error
        print("\nstopping the demo ...", file=sys.stderr)
    finally:
        for server in servers:
            server.should_exit = True
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        upstream.terminate()
        try:
            upstream.wait(timeout=5)
        except subprocess.TimeoutExpired:
            upstream.kill()
    return 0


_HELD_CALL = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything","arguments":{},'
    '"_meta":{"progressToken":"p1","request_context":"spring cleaning",'
    '"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
)
_INITIALIZE = (
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    '"capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}'
)


async def _whoami(resource: str, token: str) -> str:
    """Call the upstream's whoami through the gateway: it names the user as `sub` and the agent in `act`."""
    import httpx2

    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}, "_meta": meta},
    }
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": version,
        "mcp-method": "tools/call",
        "mcp-name": "whoami",
    }
    try:
        async with httpx2.AsyncClient(timeout=20) as http:
            answer = (await http.post(resource, json=body, headers=headers)).json()
        return str(answer["result"]["content"][0]["text"])
    except (httpx2.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        return f"(the delegated call failed: {type(exc).__name__})"


def _print_banner(public_url: str, resource: str, issuer: str, secret: str, token: str, directory: Path) -> None:
    print(
        f"""
mcp-gateway demo is running (Ctrl-C stops everything)

  MCP endpoint     {resource}
  token issuer     {issuer}   (DEVELOPMENT ONLY; client_credentials grant)
  client id        demo-agent
  client secret    {secret}
  audit log        {directory / "audit.db"}

A ready token (scopes "tools:read tools:call", audience {resource}):

{token}

Try it (the MCP SDK, or any client that can send a bearer token):
  export TOKEN=<the token above>
  curl -s {resource} -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\
       -H "Accept: application/json, text/event-stream" -H "MCP-Protocol-Version: 2025-11-25" \\
       -d '{_INITIALIZE}'
  mcp-gateway audit query --config {directory / "gateway.toml"}
""",
        flush=True,
    )


def _print_approval_walkthrough(
    public_url: str, resource: str, directory: Path, issuer: IssuerConfig, mint: Callable[..., str]
) -> None:
    """How one call waits for a person: the agent's admin token, the approver's token, the commands."""
    now = time.time()
    agent = mint(issuer, "demo-agent", scopes=["admin"], resource=resource, now=now)
    approver = mint(
        issuer, "demo-approver", scopes=[_APPROVER_SCOPE, "audit:read"], resource=public_url + API_PATH, now=now
    )
    config = directory / "gateway.toml"
    print(
        f"""People in the loop: delete_everything waits for a person's approval.

An agent token for it (client demo-agent, user alice@example.com, scope "admin"):

{agent}

An approver token (client demo-approver, user bob@example.com, scopes "{_APPROVER_SCOPE} audit:read",
audience {public_url}{API_PATH}):

{approver}

Walk through one approval:
  export AGENT_TOKEN=<the agent token>  MCP_GATEWAY_APPROVER_TOKEN=<the approver token>
  curl -sN {resource} -H "Authorization: Bearer $AGENT_TOKEN" -H "Content-Type: application/json" \\
       -H "Accept: application/json, text/event-stream" -H "MCP-Protocol-Version: 2026-07-28" \\
       -H "Mcp-Method: tools/call" -H "Mcp-Name: delete_everything" -d '{_HELD_CALL}' &
  mcp-gateway approvals list --config {config}
  mcp-gateway approvals approve ID --reason "spring cleaning is due" --config {config}
  mcp-gateway audit query --config {config} --tool delete_everything
Or open the console, {public_url}/console, paste the approver token, and approve it there.
""",
        flush=True,
    )


def run_demo(args: argparse.Namespace) -> int:
    import uvloop

    return uvloop.run(_run(args))
