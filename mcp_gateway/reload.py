"""Reloading the allowlist and policies into a running gateway, atomically, and the `reload` command.

How the command reaches the server: `serve` writes its pid to `pid_file` (default `mcp-gateway.pid` beside
gateway.toml); `mcp-gateway reload --config …` validates the files itself (a broken file: exit 2 with the
file, key and fix, nothing sent), then sends SIGHUP to that pid and waits for the server's verdict, which
the server writes beside the pid file (`….reload.json`): exit 0 if applied, 1 if the server kept its running
configuration (the reason is printed and logged), 3 if no server answered. A signal needs no listening
socket and no credential: only a user allowed to signal the process can reload it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from mcp_gateway.config import GatewayConfig, load_config
from mcp_gateway.errors import ConfigError
from mcp_gateway.proxy.route import Route, build_routes

if TYPE_CHECKING:
    from mcp_gateway.app import Gateway

logger = logging.getLogger("mcp_gateway")

# gateway.toml keys a reload does not apply (they shape sockets, keys and stores built at start-up).
_RESTART_ONLY = ("servers", "policy_version", "config_file", "allowlist")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    message: str
    policy_version: str


class Reloader:
    """Re-reads gateway.toml's allowlist and swaps the gateway's routes in one step, or keeps them and says why."""

    def __init__(self, app: Gateway, config: GatewayConfig, *, status_file: Path | None = None) -> None:
        self.app = app
        self.config = config
        self.status_file = status_file
        self.generation = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.reloads = Counter(
            "mcp_gateway_config_reloads", "Configuration reloads by result", ["result"], registry=app.registry
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)  # both series exist from the start, so a failure alert has a baseline

    def reload(self) -> ReloadResult:
        try:
            result = self._apply(load_config(self.config.config_file))
        except ConfigError as exc:
            kept = self.config.policy_version
            result = ReloadResult(False, f"reload refused, running configuration kept: {exc}", kept)
        self.reloads.labels("success" if result.ok else "failure").inc()
        (logger.info if result.ok else logger.error)("%s", result.message)
        self._write_status(result)
        return result

    def _apply(self, new: GatewayConfig) -> ReloadResult:
        app, old = self.app, self.config
        ignored = sorted(
            key for key in type(new).model_fields if key not in _RESTART_ONLY and getattr(new, key) != getattr(old, key)
        )
        current = app.routes
        unchanged = {name for name, entry in new.servers.items() if name in current and current[name].entry == entry}
        # Routes whose entry did not change keep their pool (open upstream connections, streams), credentials
        # and tool catalogue (quarantines stay in force): the very objects, not copies.
        built = build_routes(
            new,
            app.hierarchy,
            secrets=app.secrets,
            pools={name: current[name].pool for name in unchanged},
            credential_context=app.credential_context,
        )
        routes = {name: current[name] if name in unchanged else route for name, route in built.items()}
        retired = [route for name, route in current.items() if routes.get(name) is not route]
        app.swap_routes(routes)
        app.recorder.policy_version = new.policy_version  # the first call decided from here on records it
        self.config = new
        for route in retired:
            self._retire(route)
        added = sorted(set(routes) - set(current))
        removed = sorted(set(current) - set(routes))
        changed = sorted(set(routes) - unchanged - set(added))
        message = (
            f"reloaded {new.config_file}: policy version {new.policy_version[:12]}; "
            f"added {added}, changed {changed}, removed {removed}, unchanged {len(unchanged)}"
        )
        if ignored:
            message += f"; not applied until restart: {', '.join(ignored)}"
        return ReloadResult(True, message, new.policy_version)

    def _retire(self, route: Route) -> None:
        # Calls that began before the swap may still be using the old route: its pool and credential source
        # are closed once they have had as long as a drain gives them.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(_close_later(route, self.config.shutdown_grace_seconds))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _write_status(self, result: ReloadResult) -> None:
        if self.status_file is None:
            return
        self.generation += 1
        body = {"generation": self.generation, "pid": os.getpid(), "ok": result.ok, "message": result.message}
        try:
            tmp = self.status_file.with_name(self.status_file.name + ".tmp")
            tmp.write_text(json.dumps(body) + "\n")
            tmp.replace(self.status_file)  # atomic: the command never reads half a verdict
        except OSError as exc:
            logger.warning("cannot write the reload status %s (%s)", self.status_file, exc)


async def _close_later(route: Route, delay: float) -> None:
    await asyncio.sleep(delay)
    await route.pool.aclose()
    await route.credentials.aclose()


def status_file_for(pid_file: Path) -> Path:
    return pid_file.with_name(pid_file.name + ".reload.json")


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _reload_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a broken file: ConfigError → exit 2, and nothing is signalled
    pid_file = config.path_for(config.pid_file) if config.pid_file else None
    pid = args.pid
    if pid is None:
        if pid_file is None:
            print("reload: no pid_file is configured; pass --pid")
            return 3
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            print(f"reload: cannot read the server's pid from {pid_file} ({exc}); is `mcp-gateway serve` running?")
            return 3
    status_file = status_file_for(pid_file) if pid_file is not None else None
    before = _read_status(status_file) if status_file is not None else None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"reload: cannot signal pid {pid} ({exc.strerror or exc})")
        return 3
    if status_file is None:
        print(f"reload: sent SIGHUP to {pid}; the server logs the result")
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        status = _read_status(status_file)
        # A new verdict (under `serve --workers`, the first worker's: each applies the same files).
        if status is not None and status != before:
            print(f"reload: {status.get('message')}")
            return 0 if status.get("ok") else 1
        time.sleep(0.05)
    print(f"reload: sent SIGHUP to {pid} but no verdict within {args.wait}s; see the server's log")
    return 3


def add_commands(sub: Any) -> None:
    command = sub.add_parser("reload", help="re-read the allowlist and policies into the running server")
    command.add_argument("--config", default="./gateway.toml", help="path to gateway.toml")
    command.add_argument("--pid", type=int, default=None, help="the server's pid (default: read from pid_file)")
    command.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the server's verdict")
    command.set_defaults(func=_reload_command)
