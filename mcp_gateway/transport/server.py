"""The uvicorn server `mcp-gateway serve` runs: httptools behind the connection guard, metrics wired in."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from mcp_gateway.app import Gateway
from mcp_gateway.config import GatewayConfig
from mcp_gateway.transport.connections import (
    ConnectionCollector,
    ConnectionCounts,
    ConnectionLimits,
    guarded_protocol,
)

logger = logging.getLogger("mcp_gateway")
_SPARE_DESCRIPTORS = 256  # listening socket, upstream pools, audit store, logs


def build_server(
    app: Gateway, config: GatewayConfig, *, host: str, port: int, log_level: str = "info"
) -> uvicorn.Server:
    """A server for `app` whose connections obey gateway.toml's limits and show up in `/metrics`."""
    limits = ConnectionLimits(
        header_timeout=config.header_timeout_seconds,
        idle_timeout=config.idle_connection_seconds,
        max_connections=config.max_connections,
    )
    _ensure_descriptors(2 * limits.max_connections + _SPARE_DESCRIPTORS)  # open + refused while draining
    counts = ConnectionCounts()
    app.registry.register(ConnectionCollector(counts, limits))
    return _GatewayServer(
        app,
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            http=guarded_protocol(limits, counts),
            lifespan="on",
            log_level=log_level,
            access_log=False,
            server_header=False,
            # Our own public_url drives every URL we emit; X-Forwarded-* is not trusted by default.
            proxy_headers=bool(config.trusted_proxies),
            forwarded_allow_ips=list(config.trusted_proxies) or None,
        ),
    )


class _GatewayServer(uvicorn.Server):
    """uvicorn's server, telling the gateway when shutdown begins: calls held for approval are refused then,
    with a clean error, instead of holding the shutdown up until they time out (they live in memory only)."""

    def __init__(self, app: Gateway, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.gateway = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.gateway.begin_shutdown()
        await super().shutdown(sockets)


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
