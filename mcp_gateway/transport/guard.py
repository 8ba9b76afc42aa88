"""Host and Origin checks against DNS rebinding, computed once from config."""

from __future__ import annotations

from urllib.parse import urlsplit

from mcp_gateway.config import GatewayConfig
from mcp_gateway.errors import TransportRejected


class OriginGuard:
    """MCP transports §Security Warning: validate Origin (403) and Host (421) on every request.

    CVE-2025-49596 was a local MCP endpoint reachable from a web page through DNS rebinding; a
    rebound name arrives with the attacker's Host, which is why Host is checked, not only Origin.
    """

    def __init__(self, config: GatewayConfig) -> None:
        public = urlsplit(config.public_url)
        default_port = 443 if public.scheme == "https" else 80
        host = (public.hostname or "").lower()
        port = public.port or default_port
        hosts = {f"{host}:{port}"}
        if public.port is None:
            hosts.add(host)
        loopback_port = config.port
        for name in ("127.0.0.1", "localhost", "[::1]"):
            hosts.add(f"{name}:{loopback_port}")
        hosts.update(h.lower() for h in config.allowed_hosts)
        self.hosts = frozenset(hosts)
        origin = f"{public.scheme}://{public.netloc}".lower()
        self.origins = frozenset({origin, *(o.lower().rstrip("/") for o in config.allowed_origins)})

    def check(self, host: bytes | None, origin: bytes | None) -> None:
        if host is None or host.decode("latin-1").lower() not in self.hosts:
            # RFC 9110 §15.5.20: 421 Misdirected Request — this server is not authoritative for that Host.
            raise TransportRejected("Misdirected request: Host is not served here", status_code=421)
        if origin is not None and origin.decode("latin-1").lower().rstrip("/") not in self.origins:
            # MCP transports: if Origin is present and invalid, the server MUST respond 403.
            raise TransportRejected("Forbidden: Origin is not allowed", status_code=403)
