"""The uvicorn server `mcp-gateway serve` runs: httptools behind the connection guard, metrics wired in."""

from __future__ import annotations

import logging
import sys

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from mcp_gateway.app import Gateway
from mcp_gateway.config import GatewayConfig
from mcp_gateway.observe.logs import Redactor, known_secrets, log_config
from mcp_gateway.reload import Reloader, status_file_for
from mcp_gateway.transport.connections import (
    ConnectionCollector,
    ConnectionCounts,
    ConnectionLimits,
    guarded_protocol,
)
from mcp_gateway.transport.lifecycle import GatewayServer, StreamDrain

logger = logging.getLogger("mcp_gateway")
_SPARE_DESCRIPTORS = 256  # listening socket, upstream pools, audit store, logs


def build_server(
    app: Gateway,
    config: GatewayConfig,
    *,
    host: str,
    port: int,
    log_level: str | None = None,
    configure_logging: bool = True,
    owns_pid_file: bool = True,
) -> uvicorn.Server:
    """A server for `app` whose connections obey gateway.toml's limits and show up in `/metrics`.

    `configure_logging` applies `[logging]` to the whole process (uvicorn's lines included); `log_level`
    overrides its level. Tests that serve inside pytest leave the process's logging alone. A worker of
    `serve --workers` does not own the pid file: its parent does, and forwards SIGHUP.
    """
    settings = config.logging if log_level is None else config.logging.model_copy(update={"level": log_level.lower()})
    limits = ConnectionLimits(
        header_timeout=config.header_timeout_seconds,
        idle_timeout=config.idle_connection_seconds,
        max_connections=config.max_connections,
    )
    _ensure_descriptors(2 * limits.max_connections + _SPARE_DESCRIPTORS)  # open + refused while draining
    counts = ConnectionCounts()
    app.registry.register(ConnectionCollector(counts, limits))
    logs = log_config(settings, Redactor(known_secrets(config, app.secrets))) if configure_logging else LOGGING_CONFIG
    pid_file = config.path_for(config.pid_file) if config.pid_file else None
    reloader = Reloader(app, config, status_file=status_file_for(pid_file) if pid_file else None)
    drain = StreamDrain(app)
    return GatewayServer(
        uvicorn.Config(
            drain,
            host=host,
            port=port,
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            http=guarded_protocol(limits, counts),
            lifespan="on",
            log_level=settings.level,
            log_config=logs,
            access_log=False,
            server_header=False,
            # Our own public_url drives every URL we emit; X-Forwarded-* is not trusted by default.
            proxy_headers=bool(config.trusted_proxies),
            forwarded_allow_ips=list(config.trusted_proxies) or None,
            timeout_graceful_shutdown=config.shutdown_grace_seconds,
        ),
        drain=drain,
        pid_file=pid_file if owns_pid_file else None,
        on_reload=reloader.reload,
        # Calls held for approval live in memory only: they are refused at once, not held to the deadline.
        on_shutdown=app.begin_shutdown,
    )


def _ensure_descriptors(needed: int) -> None:
    # The cap only protects the process if the descriptors run out after it, not before: raise the soft
    # limit as far as the hard limit allows, and say so if even that is short.
    if sys.platform == "win32":  # pragma: no cover
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning(
            "max_connections needs about %d file descriptors but this process may open %d; "
            "lower max_connections or raise the limit (ulimit -n)",
            needed,
            soft,
        )
