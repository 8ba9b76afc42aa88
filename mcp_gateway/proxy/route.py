"""One upstream route, compiled once from its allowlist entry."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp_gateway.config import GatewayConfig, RateLimits, ServerEntry
from mcp_gateway.credentials import CredentialContext, CredentialSource, build_credential_source
from mcp_gateway.identity.tls_pins import spki_verifier
from mcp_gateway.policy.decider import Decider
from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.engines import decider_factory
from mcp_gateway.policy.ratelimit import effective_rate_limits
from mcp_gateway.policy.scopes import ScopeHierarchy
from mcp_gateway.proxy.catalogue import ToolCatalogue
from mcp_gateway.upstream.http11 import UpstreamPool


@dataclass(frozen=True, slots=True)
class Route:
    """Everything per-request work needs about one upstream, precomputed."""

    name: str
    entry: ServerEntry
    resource_uri: str
    metadata_url: str
    pool: UpstreamPool
    policy: ServerPolicy  # scope rules: challenges, list filtering, server-to-client requests
    decider: Decider  # judges each client request (the scope rules, or an engine built on them)
    upstream_path: str
    credentials: CredentialSource  # what the gateway sends upstream; the client's token never is
    upstream_identity: str  # what the audit records as the verified upstream
    rate_limits: RateLimits
    catalogue: ToolCatalogue | None  # present when the allowlist pins tool definitions (tools_sha256)


def build_routes(
    config: GatewayConfig,
    hierarchy: ScopeHierarchy,
    *,
    secrets: Mapping[str, str],
    pools: Mapping[str, UpstreamPool] | None = None,
    credential_context: CredentialContext | None = None,
) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    make_decider = decider_factory(config)  # `[policy] cedar`: parsed once here; ConfigError stops start-up
    for name, entry in config.servers.items():
        pool = pools[name] if pools is not None and name in pools else _make_pool(config, entry)
        policy = ServerPolicy.from_entry(entry, hierarchy)
        routes[name] = Route(
            name=name,
            entry=entry,
            resource_uri=config.resource_uri(name),
            metadata_url=config.resource_metadata_url(name),
            pool=pool,
            policy=policy,
            decider=make_decider(policy),
            upstream_path=pool.path,
            credentials=build_credential_source(entry, secrets, credential_context),
            upstream_identity=_identity(entry),
            rate_limits=effective_rate_limits(config.rate_limits, entry),
            catalogue=(
                ToolCatalogue(entry.tools_sha256, strict_arguments=entry.strict_arguments)
                if entry.tools_sha256
                else None
            ),
        )
    return routes


def _identity(entry: ServerEntry) -> str:
    if entry.tls_spki_sha256 and urlsplit(entry.url).scheme == "https":
        return f"{entry.url} pin-sha256={'|'.join(entry.tls_spki_sha256)}"
    return entry.url


def _make_pool(config: GatewayConfig, entry: ServerEntry) -> UpstreamPool:
    context: ssl.SSLContext | None = None
    verify_peer = None
    if urlsplit(entry.url).scheme == "https":
        cafile = str(config.path_for(entry.ca_bundle)) if entry.ca_bundle else None
        context = ssl.create_default_context(cafile=cafile)
        # DESIGN: the key is checked at the handshake, before one byte of the request or of an
        # injected credential is written; CA and hostname checks stay on underneath.
        verify_peer = spki_verifier(entry.tls_spki_sha256)
    return UpstreamPool(
        entry.url,
        ssl_context=context,
        verify_peer=verify_peer,
        max_connections=entry.max_connections,
        connect_timeout=entry.connect_timeout_seconds,
        read_timeout=entry.read_timeout_seconds,
        max_header_bytes=config.max_header_bytes,
        max_body_bytes=config.max_body_bytes,
    )
