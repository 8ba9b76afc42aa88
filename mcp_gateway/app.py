"""The gateway's ASGI application: routing, lifespan, metadata and health endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mcp_gateway.approvals.http import ApproverEndpoints
from mcp_gateway.audit.sink import AuditSink
from mcp_gateway.audit.stores import open_audit_store
from mcp_gateway.audit.summary import RefusalSummarizer
from mcp_gateway.auth.verifier import TokenVerifier, build_verifier
from mcp_gateway.config import GatewayConfig, random_session_key
from mcp_gateway.credentials import CredentialContext, PublishedKeys
from mcp_gateway.credentials.metrics import CredentialFailureCollector
from mcp_gateway.errors import ConfigError, HTTPError
from mcp_gateway.limits import LimitStore, build_limit_store
from mcp_gateway.observe.tracing import NO_TRACER, Tracer, build_tracer
from mcp_gateway.policy.scopes import ScopeHierarchy
from mcp_gateway.proxy.pipeline import McpEndpoint
from mcp_gateway.proxy.recording import CallRecorder
from mcp_gateway.proxy.route import Route, build_routes
from mcp_gateway.proxy.session_gate import SessionGate
from mcp_gateway.proxy.sessions import SessionSealer
from mcp_gateway.transport.asgi import Receive, Scope, Send, header, respond, respond_json
from mcp_gateway.transport.lifecycle import tune_gc
from mcp_gateway.upstream.http11 import UpstreamPool

logger = logging.getLogger("mcp_gateway")

_SERVED_METHODS = frozenset({"GET", "POST", "DELETE"})
_WELL_KNOWN = "/.well-known/oauth-protected-resource/"
_MAX_CACHED_COUNTERS = 1024


class Gateway:
    """A plain ASGI app (no framework routing on the hot path) serving every allowlisted route."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        verifier: TokenVerifier,
        audit: AuditSink,
        http_client: httpx2.AsyncClient | None,
        clock: Callable[[], float] = time.time,
        pools: Mapping[str, UpstreamPool] | None = None,
        secrets: Mapping[str, str] | None = None,
        limits: LimitStore | None = None,
        tune_gc: bool = False,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        env = secrets if secrets is not None else os.environ
        self.tune_gc = tune_gc
        self.tracer = tracer  # NO_TRACER unless [otel]: then one span per MCP request (observe/tracing.py)
        self.config = config
        self.verifier = verifier
        self.audit = audit
        self.http_client = http_client
        self.secrets = env  # what credential sources resolve `*_env` against, again on a reload
        self.hierarchy = ScopeHierarchy(config.scope_implications)
        self.signing_keys = PublishedKeys(clock)  # the gateway's own keys, when it signs upstream assertions
        context = self.credential_context = CredentialContext(  # shared by the routes a reload builds
            self._credential_client, clock, config.base_dir, config.public_url, self.signing_keys
        )
        self.routes: dict[str, Route] = build_routes(
            config, self.hierarchy, secrets=env, pools=pools, credential_context=context
        )
        self._route_paths: dict[str, Route] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self.swap_routes(self.routes)
        self.recorder = CallRecorder(
            config, audit, RefusalSummarizer(window_seconds=config.audit.unauthenticated_summary_seconds)
        )
        self.limits = limits or build_limit_store(config)
        sessions = SessionGate(
            SessionSealer(_session_key(config, env)),
            self.limits,
            max_age_seconds=config.session_max_age_seconds,
            clock=clock,
        )
        self.endpoint = McpEndpoint(
            config, verifier=verifier, recorder=self.recorder, sessions=sessions, limits=self.limits, clock=clock
        )
        held = self.endpoint.approvals.ledger  # /approvals, /audit/*, /console: people in the loop (issue 16)
        self.people = ApproverEndpoints(config, verifier, held, self.endpoint.guard, self.hierarchy, clock)
        self._flusher: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mcp_gateway_requests", "Requests to MCP endpoints", ["server", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mcp_gateway_request_seconds", "Time to answer MCP endpoint requests", ["server"], registry=self.registry
        )
        self.registry.register(_AuditCollector(audit))
        self.registry.register(CredentialFailureCollector(self.endpoint.exchange.credential_failures))
        self.registry.register(_LimitsCollector(self.limits))
        # Labelled children looked up once, not per request (`labels()` validates and locks each time).
        self._latency = {name: self.latency.labels(name) for name in self.routes}
        self._counters: dict[tuple[str, str, int], Any] = {}

    def swap_routes(self, routes: dict[str, Route]) -> None:
        """Serve `routes` from the next request on; requests already running keep the routes they began with.

        Each map is replaced by one assignment, so a request never sees half of an old and half of a new set.
        """
        self._metadata = {f"{_WELL_KNOWN}{name}/mcp": self._metadata_document(r) for name, r in routes.items()}
        self._route_paths = {f"/{name}/mcp": route for name, route in routes.items()}
        self.routes = routes

    def _credential_client(self) -> httpx2.AsyncClient:
        # Token endpoints share the gateway's client (closed at shutdown); made on first use if none was given.
        if self.http_client is None:
            self.http_client = httpx2.AsyncClient(follow_redirects=False)
        return self.http_client

    def _count(self, server: str, method: str, status: int) -> None:
        key = (server, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self.requests.labels(server, method, str(status))
            if len(self._counters) < _MAX_CACHED_COUNTERS:  # the method is the client's: keep the cache bounded
                self._counters[key] = counter
        counter.inc()

    def _metadata_document(self, route: Route) -> dict[str, Any]:
        auth = self.config.auth
        servers: list[str] = []
        if route.entry.authorization_server:
            servers = [route.entry.authorization_server]
        elif auth is not None:
            servers = list(auth.authorization_servers or (auth.issuer,))
        entry = route.entry
        named = {
            scope
            for table in (entry.tool_scopes, entry.resource_scopes, entry.prompt_scopes)
            for scopes in table.values()
            for scope in scopes
        }
        named.update(entry.default_scopes or ())
        return {
            # RFC 9728 §3.3: resource MUST be identical to the URL the client used; taken from
            # public_url, never from the Host header.
            "resource": route.resource_uri,
            "authorization_servers": servers,
            "scopes_supported": sorted(named),
            "bearer_methods_supported": ["header"],
            "resource_name": route.name,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            route = self._route_paths.get(path)
            if route is not None:
                started = time.perf_counter()
                status = 0  # what a request that raised is counted as
                span = self.tracer.request(route.name, scope)
                try:
                    status = await self.endpoint(route, scope, receive, send)
                finally:
                    span.end(status)
                    # The HTTP method is the client's: label only the ones served, so series stay bounded.
                    http_method = scope["method"] if scope["method"] in _SERVED_METHODS else "other"
                    self._count(route.name, http_method, status)
                    latency = self._latency.get(route.name)
                    if latency is None:  # a route added by swap_routes
                        latency = self._latency[route.name] = self.latency.labels(route.name)
                    latency.observe(time.perf_counter() - started)
                return
            await self._other(path, scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _other(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if self.people.handles(path):
            await self.people(path, scope, receive, send)
        elif path in self._metadata:
            if method not in ("GET", "HEAD"):
                await respond(send, 405, b"", [(b"allow", b"GET")])
                return
            try:
                self.endpoint.guard.check(header(scope["headers"], b"host"), None)
            except HTTPError as exc:
                await respond_json(send, exc.status_code, {"error": exc.message})
                return
            await respond_json(send, 200, self._metadata[path], [(b"cache-control", b"public, max-age=300")])
        elif path == "/.well-known/jwks.json" and self.signing_keys:
            # The keys upstreams verify the gateway's signed assertions with, retired ones until they are unused.
            await respond_json(send, 200, self.signing_keys.document(), [(b"cache-control", b"public, max-age=60")])
        elif path == "/healthz":
            await respond_json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            ready, checks = await self.readiness()
            await respond_json(send, 200 if ready else 503, {"ready": ready, "checks": checks})
        elif path == "/metrics":
            body = generate_latest(self.registry)
            await respond(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())], json_body=False)
        else:
            await respond_json(send, 404, {"error": "Not Found"})

    async def readiness(self) -> tuple[bool, dict[str, bool]]:
        checks = {
            "config": True,
            "token_keys": self.verifier.ready,
            "audit": self.audit.healthy,
            "limits": self.limits.healthy,
        }
        reachable = await asyncio.gather(*(_reachable(route.entry.url) for route in self.routes.values()))
        for name, ok in zip(self.routes, reachable, strict=True):
            checks[f"upstream:{name}"] = ok
        return all(checks.values()), checks

    async def startup(self) -> None:
        await self.audit.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_summaries())
        try:
            await self.verifier.start()
        except Exception as exc:  # a cold-start JWKS failure leaves us not ready, never open
            logger.warning("token keys not loaded at start-up: %s", type(exc).__name__)
        if self.tune_gc:
            tune_gc()

    async def _flush_summaries(self) -> None:
        # Refusal summaries close when their window ends, even if no further refusal arrives.
        interval = max(1.0, self.config.audit.unauthenticated_summary_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            for record in self.recorder.summarizer.flush(self.endpoint.clock()):
                self.audit.append_nowait(record)

    def begin_shutdown(self) -> None:  # calls held for approval live in memory only: refuse them now
        self.endpoint.approvals.ledger.close()

    async def shutdown(self) -> None:
        self.begin_shutdown()
        if self._flusher is not None:
            self._flusher.cancel()
        for record in self.recorder.summarizer.flush(self.endpoint.clock(), final=True):
            self.audit.append_nowait(record)
        for route in self.routes.values():
            await route.pool.aclose()
            await route.credentials.aclose()
        await self.limits.aclose()
        await self.verifier.aclose()
        await self.audit.aclose()
        self.tracer.shutdown()
        if self.http_client is not None:
            await self.http_client.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _AuditCollector(Collector):
    """The audit sink's health and counters, read at scrape time: what to alert on before a gap in the log
    (records lost, batches failed, the queue filling) turns into refused tool calls."""

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink

    def collect(self) -> list[Metric]:
        healthy = GaugeMetricFamily("mcp_gateway_audit_healthy", "1 if the audit store's last write succeeded")
        healthy.add_metric([], 1.0 if self.sink.healthy else 0.0)
        metrics: list[Metric] = [healthy]
        stats = self.sink.stats
        for name, value, text in (
            ("records_appended", stats.appended, "Audit records committed"),
            ("commits", stats.commits, "Audit transactions committed (records / commits = group size)"),
            ("failed_batches", stats.failed_batches, "Audit transactions that could not be written"),
            ("records_rejected", stats.rejected, "Audit records refused before writing (bad field values)"),
            ("records_lost", stats.lost, "Outcome and event records that were never written"),
            ("queue_full", stats.queue_full, "Tool calls refused because the audit queue was full"),
        ):
            counter = CounterMetricFamily(f"mcp_gateway_audit_{name}", text)
            counter.add_metric([], float(value))
            metrics.append(counter)
        depth = GaugeMetricFamily("mcp_gateway_audit_queue_depth", "Audit records waiting to be written")
        depth.add_metric([], float(stats.queue_depth))
        metrics.append(depth)
        return metrics


class _LimitsCollector(Collector):
    """The limit store's health and, for a shared store, what it did while its backend was down."""

    def __init__(self, store: LimitStore) -> None:
        self.store = store

    def collect(self) -> list[Metric]:
        healthy = GaugeMetricFamily("mcp_gateway_limits_healthy", "1 if the limit store answers")
        healthy.add_metric([], 1.0 if self.store.healthy else 0.0)
        metrics: list[Metric] = [healthy]
        stats = getattr(self.store, "stats", None)  # a shared store's counters (limits/redis.py)
        if stats is None:
            return metrics
        for name, text in (
            ("round_trips", "Round trips to the shared limit store"),
            ("failures", "Round trips to the shared limit store that failed or timed out"),
            ("denied_while_down", "Calls refused with 503 because the limit store was down (on_store_down=deny)"),
            ("allowed_while_down", "Calls let through unlimited while the limit store was down (on_store_down=allow)"),
        ):
            counter = CounterMetricFamily(f"mcp_gateway_limits_{name}", text)
            counter.add_metric([], float(getattr(stats, name)))
            metrics.append(counter)
        return metrics


async def _reachable(url: str, timeout: float = 2.0) -> bool:
    # A TCP connect is enough to say "reachable"; identity is checked on every real connection.
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _session_key(config: GatewayConfig, env: Mapping[str, str]) -> bytes:
    if config.session_key_env is None:
        return random_session_key()
    raw = env.get(config.session_key_env, "")
    try:
        key = bytes.fromhex(raw) if len(raw) == 64 else base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ConfigError("gateway.toml", "session_key_env", f"{config.session_key_env} is not hex or base64") from exc
    if len(key) != 32:
        raise ConfigError("gateway.toml", "session_key_env", f"{config.session_key_env} must hold 32 bytes")
    return key


def create_app(
    config: GatewayConfig,
    *,
    http_client: httpx2.AsyncClient | None = None,
    verifier: TokenVerifier | None = None,
    audit: AuditSink | None = None,
    clock: Callable[[], float] = time.time,
    pools: Mapping[str, UpstreamPool] | None = None,
    secrets: Mapping[str, str] | None = None,
    limits: LimitStore | None = None,
    tune_gc: bool = False,
    tracer: Tracer | None = None,
) -> Gateway:
    """Build the gateway from a loaded config; every seam can be injected for tests.

    `tune_gc` is for a process that serves nothing else (`mcp-gateway serve`): once started, the heap so
    far is frozen out of garbage collection and the youngest generation is collected less often.
    """
    if verifier is None:
        if config.auth is None:
            raise ConfigError("gateway.toml", "auth", "an [auth] table is required: the gateway never runs open")
        http_client = http_client or httpx2.AsyncClient(follow_redirects=False)
        verifier = build_verifier(config.auth, http_client=http_client, clock=clock, secrets=secrets or os.environ)
    if audit is None:
        audit = open_audit_store(config)  # `[audit]` picks the store; `enabled = false` gives a NullAuditSink
    return Gateway(
        config,
        verifier=verifier,
        audit=audit,
        http_client=http_client,
        clock=clock,
        pools=pools,
        secrets=secrets,
        limits=limits,
        tune_gc=tune_gc,
        tracer=tracer if tracer is not None else build_tracer(config.otel),
    )
