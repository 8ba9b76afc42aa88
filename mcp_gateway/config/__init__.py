"""Loading gateway.toml and server_allowlist.toml once into frozen, validated models.

The `[servers.NAME.credentials]` table's model is in `config/credentials.py`; pieces every model shares
(the frozen model config, the scope-token type, URL checks) in `config/common.py`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from mcp_gateway.config.approvals import ApprovalRule as ApprovalRule
from mcp_gateway.config.common import FROZEN as _FROZEN
from mcp_gateway.config.common import Scope as Scope
from mcp_gateway.config.common import is_loopback as is_loopback
from mcp_gateway.config.credentials import ClientAuthMethod as ClientAuthMethod
from mcp_gateway.config.credentials import Credentials as Credentials
from mcp_gateway.config.credentials import CredentialType as CredentialType
from mcp_gateway.config.observe import LoggingConfig as LoggingConfig
from mcp_gateway.config.observe import OtelConfig as OtelConfig
from mcp_gateway.errors import ConfigError
from mcp_gateway.identity.confusables import confusable_pairs

ServerRequest = Literal["sampling", "elicitation", "roots"]


class AuthConfig(BaseModel):
    """`[auth]`: how bearer tokens are validated (JWT via JWKS, or RFC 7662 introspection)."""

    model_config = _FROZEN

    issuer: str
    jwks_uri: str | None = None  # omitted → RFC 8414 / OpenID discovery from the issuer
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: int = Field(default=60, ge=0, le=600)
    max_token_lifetime_seconds: int = Field(default=3600, gt=0)
    authorization_servers: tuple[str, ...] = ()  # advertised in RFC 9728 metadata; default [issuer]
    introspection_endpoint: str | None = None  # set → opaque tokens are introspected (RFC 7662)
    client_id: str | None = None  # the gateway's credentials at the introspection endpoint
    client_secret_env: str | None = None
    introspection_cache_seconds: int = Field(default=60, ge=0)
    introspection_timeout_seconds: float = Field(default=5.0, gt=0)  # a slower endpoint: 503, never a hang
    accept_scp_claim: bool = False  # accept an `scp` array when `scope` is absent
    jwks_cache_seconds: int = Field(default=300, gt=0)
    jwks_refetch_cooldown_seconds: float = Field(default=10.0, ge=0)
    jwks_fetch_timeout_seconds: float = Field(default=5.0, gt=0)
    # While the JWKS endpoint fails, cached keys keep serving this long past jwks_cache_seconds, then every
    # token is refused (503): a key rotated out after a compromise is not trusted forever.
    jwks_max_stale_seconds: float = Field(default=86_400.0, ge=0)
    max_token_bytes: int = Field(default=8192, gt=0)
    token_cache_size: int = Field(default=10000, gt=0)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [alg for alg in value if alg not in allowed]
        if bad or not value:
            # RFC 8725 §3.1: only asymmetric, explicitly configured algorithms; never "none" or HMAC.
            raise ValueError(f"expected a non-empty list drawn from {sorted(allowed)}, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _introspection_needs_client(self) -> AuthConfig:
        if self.introspection_endpoint is not None and self.client_id is None:
            raise ValueError("introspection_endpoint needs client_id (and client_secret_env)")
        return self


class AuditConfig(BaseModel):
    """`[audit]`: where records go and what they keep."""

    model_config = _FROZEN

    enabled: bool = True  # false → no audit trail at all (benchmark baselines only; logged loudly)
    database: str = "audit.db"
    url: str | None = None  # a shared store's URL; its scheme picks the store (audit/stores.py). Absent: database
    # "full": fsync every group commit (survives power loss); "normal": WAL without fsync per commit
    # (survives a crashed or killed process, not power loss) — SQLite's own durability trade-off.
    synchronous: Literal["full", "normal"] = "full"
    store_arguments: bool = False
    redact_keys: tuple[str, ...] = ("password", "secret", "token", "authorization", "api_key")
    unauthenticated_summary_seconds: float = Field(default=60.0, gt=0)
    # a shared store (url): the longest wait to connect or to commit one group before the call gets 503
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class PolicyConfig(BaseModel):
    """`[policy]`: argument-level rules in Cedar, enforced and in shadow (paths relative to gateway.toml)."""

    model_config = _FROZEN

    cedar: str | None = None  # enforced after the scope rules; a refusal names the policy's @id
    shadow_cedar: str | None = None  # evaluated beside, never enforced: disagreements go to the audit


class RateLimit(BaseModel):
    """A token bucket: `rate` tokens per second refilled up to `burst`."""

    model_config = _FROZEN

    rate: float = Field(gt=0)
    burst: int = Field(gt=0)


class RateLimits(BaseModel):
    """`[rate_limits]`: buckets per agent, per agent and tool, per delegating user. Absent → unlimited."""

    model_config = _FROZEN

    per_agent: RateLimit | None = None
    per_agent_tool: RateLimit | None = None
    per_user: RateLimit | None = None


class GatewayRateLimits(RateLimits):
    """The gateway-wide `[rate_limits]`: the buckets, plus where they and the session counts are kept.

    Without `redis_url` each process counts alone (an agent may spend its limit once per worker and
    replica); with it, every worker and replica draws from the same buckets and session caps.
    """

    redis_url: str | None = None  # "redis://host:6379/0", "rediss://…" or "unix:///path"; absent → in-process
    on_store_down: Literal["deny", "allow"] = "deny"  # Redis unreachable: refuse with 503, or let calls through
    redis_timeout_seconds: float = Field(default=0.5, gt=0, le=30)  # bound on every Redis round trip
    redis_key_prefix: str = Field(default="mcp-gateway:", min_length=1)  # so deployments can share one Redis

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
                raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}")
        return value


class ServerEntry(BaseModel):
    """One `[servers.NAME]` allowlist entry."""

    model_config = _FROZEN

    name: str = ""  # filled from the table key
    url: str
    server_name: str | None = None
    tls_spki_sha256: tuple[str, ...] = ()
    ca_bundle: str | None = None
    allow_insecure_http: bool = False
    authorization_server: str | None = None
    default_scopes: tuple[Scope, ...] | None = None
    server_requests: tuple[ServerRequest, ...] = ("sampling", "elicitation", "roots")
    tool_scopes: Mapping[str, tuple[Scope, ...]] = Field(default_factory=dict)
    resource_scopes: Mapping[str, tuple[Scope, ...]] = Field(default_factory=dict)
    prompt_scopes: Mapping[str, tuple[Scope, ...]] = Field(default_factory=dict)
    tools_sha256: Mapping[str, str] = Field(default_factory=dict)
    strict_arguments: bool = False  # tools/call: also refuse argument properties the pinned schema does not declare
    credentials: Credentials | None = None
    hide_step_up: bool = False  # hide list entries the token could only reach after a step-up
    rate_limits: RateLimits | None = None  # overrides the gateway-wide [rate_limits] for this server
    approvals: Mapping[str, ApprovalRule] = Field(default_factory=dict)  # tool name → who approves its calls
    acknowledge_confusable: tuple[str, ...] = ()
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # The longest silence between two bytes from the upstream (a progress notification is bytes): the official
    # TypeScript SDK gives up after 60 s, and a hung upstream should not hold a pool connection for longer.
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    max_call_seconds: float | None = Field(default=None, gt=0)  # a cap on one whole call, however chatty
    max_connections: int = Field(default=32, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("the URL must not carry user info or a fragment (put secrets in [credentials])")
        return value

    @model_validator(mode="after")
    def _transport_rules(self) -> ServerEntry:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not self.allow_insecure_http and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"url {self.url!r} is plain http to a non-loopback host; use https or set allow_insecure_http = true"
            )
        if parts.scheme == "https" and not self.tls_spki_sha256:
            # DESIGN: an https upstream is trusted only through a pinned key, checked at the handshake.
            raise ValueError(
                "https upstreams need tls_spki_sha256 pins; record them with `mcp-gateway allowlist pin NAME`"
            )
        return self

    @field_validator("tls_spki_sha256")
    @classmethod
    def _pins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pin in value:
            try:
                raw = base64.b64decode(pin, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"pin {pin!r} is not the base64 of a 32-byte SHA-256 digest")
        return value


class GatewayConfig(BaseModel):
    """`gateway.toml` with its allowlist resolved."""

    model_config = _FROZEN

    public_url: str = "http://127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    allowlist: str = "server_allowlist.toml"
    allowed_hosts: tuple[str, ...] = ()  # Host header values accepted; default: public_url's host[:port] + loopback
    allowed_origins: tuple[str, ...] = ()  # Origin values accepted; default: public_url's origin
    session_key_env: str | None = None  # base64/hex 32-byte key for sealing session ids; absent → random per process
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_event_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    # Open handshake sessions per principal: per process, or fleet-wide with [rate_limits] redis_url.
    max_sessions_per_principal: int = Field(default=1000, gt=0)
    session_max_age_seconds: int = Field(default=86_400, gt=0)  # a handshake session ends this long after initialize
    # Connection hygiene at the front door (per process): a request head must be complete this long after the
    # connection opened or its previous response ended; a connection waiting for a request that sends no byte
    # for idle_connection_seconds is closed; past max_connections new connections get a 503 and are closed.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    idle_connection_seconds: float = Field(default=5.0, gt=0, le=86_400)
    max_connections: int = Field(default=1024, gt=0, le=1_000_000)
    trusted_proxies: tuple[str, ...] = ()
    # SIGTERM: stop accepting, let calls in flight finish for this long, then cancel (and audit) the rest.
    shutdown_grace_seconds: int = Field(default=20, ge=0, le=3600)
    pid_file: str | None = "mcp-gateway.pid"  # written by `serve`, read by `reload`; relative to this file
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    otel: OtelConfig | None = None
    auth: AuthConfig | None = None
    audit: AuditConfig = Field(default_factory=AuditConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    rate_limits: GatewayRateLimits = Field(default_factory=GatewayRateLimits)
    scope_implications: Mapping[Scope, tuple[Scope, ...]] = Field(default_factory=dict)  # "admin" = ["tools:call"]
    servers: Mapping[str, ServerEntry] = Field(default_factory=dict)
    base_dir: str = "."  # directory of gateway.toml; relative paths resolve against it
    policy_version: str = ""  # SHA-256 of the loaded allowlist file, recorded in audit records
    config_file: str = ""  # the gateway.toml this was loaded from (what a reload re-reads)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"expected an origin like https://gateway.example.com, got {value!r}")
        return value.rstrip("/")

    def resource_uri(self, server: str) -> str:
        """RFC 9728 §3.3 / RFC 8707: the route's resource identifier, byte-identical everywhere."""
        return f"{self.public_url}/{server}/mcp"

    def resource_metadata_url(self, server: str) -> str:
        """RFC 9728 §3.1: the well-known URI inserted between host and path."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path}/{server}/mcp"

    def path_for(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else Path(self.base_dir) / path


@dataclass(frozen=True)
class _Source:
    file: str
    data: dict[str, Any]
    sha256: str  # of the very bytes parsed, so the policy version always describes what was loaded


def _read_toml(path: Path) -> _Source:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return _Source(str(path), tomllib.loads(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "(syntax)", f"not valid TOML: {exc}") from exc


def _raise_validation(file: str, prefix: str, exc: ValidationError) -> None:
    first = exc.errors()[0]
    key = ".".join([prefix, *[str(p) for p in first["loc"]]] if prefix else [str(p) for p in first["loc"]])
    kind = first["type"]
    if kind == "extra_forbidden":
        problem = "unknown key; remove it or check its spelling"
    elif kind == "missing":
        problem = "required key is missing"
    else:
        problem = str(first["msg"])
        if "input" in first and kind not in ("value_error",):
            problem += f" (got {first['input']!r})"
    raise ConfigError(file, key or "(top level)", problem) from exc


def load_allowlist(path: Path) -> tuple[dict[str, ServerEntry], str]:
    """Parse the allowlist; returns the entries and the file's SHA-256 (the policy version)."""
    source = _read_toml(path)
    extra = set(source.data) - {"servers"}
    if extra:
        raise ConfigError(
            source.file, sorted(extra)[0], "unknown top-level key; only [servers.NAME] tables belong here"
        )
    servers_raw = source.data.get("servers", {})
    if not isinstance(servers_raw, dict):
        raise ConfigError(source.file, "servers", "expected tables [servers.NAME]")
    servers: dict[str, ServerEntry] = {}
    for name, body in servers_raw.items():
        if not _valid_route_name(name):
            raise ConfigError(source.file, f"servers.{name}", "names must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        if not isinstance(body, dict):
            raise ConfigError(source.file, f"servers.{name}", "expected a table")
        try:
            servers[name] = ServerEntry.model_validate({**body, "name": name})
        except ValidationError as exc:
            _raise_validation(source.file, f"servers.{name}", exc)
    # TOML itself refuses duplicate tables; names differing only in case would be two routes for one
    # human reading, so refuse those too.
    seen: dict[str, str] = {}
    for name in servers:
        if name.lower() in seen:
            raise ConfigError(
                source.file, f"servers.{name}", f"duplicates servers.{seen[name.lower()]} (case-insensitive)"
            )
        seen[name.lower()] = name
    pairs = confusable_pairs(
        {name: entry.url for name, entry in servers.items()},
        {name: entry.acknowledge_confusable for name, entry in servers.items()},
    )
    if pairs:
        name, other, why = pairs[0]
        raise ConfigError(
            source.file,
            f"servers.{name}",
            f"confusable with servers.{other} ({why}); a typosquat? If both are intended, add "
            f'acknowledge_confusable = ["{other}"] to [servers.{name}]',
        )
    return servers, source.sha256


def _valid_route_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name) is not None and name not in (".well-known",)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Load gateway.toml and its allowlist; every mistake is a ConfigError naming file, key and fix."""
    config_path = Path(path)
    source = _read_toml(config_path)
    data = dict(source.data)
    for forbidden in ("servers", "base_dir", "policy_version", "config_file"):
        if forbidden in data:
            raise ConfigError(source.file, forbidden, "not allowed here; servers belong in the allowlist file")
    base_dir = config_path.resolve().parent
    allowlist_rel = data.get("allowlist", "server_allowlist.toml")
    if not isinstance(allowlist_rel, str):
        raise ConfigError(source.file, "allowlist", "expected a path string")
    allowlist_path = Path(allowlist_rel) if Path(allowlist_rel).is_absolute() else base_dir / allowlist_rel
    servers, policy_version = load_allowlist(allowlist_path)
    try:
        return GatewayConfig.model_validate(
            {
                **data,
                "servers": servers,
                "base_dir": str(base_dir),
                "policy_version": policy_version,
                "config_file": str(config_path.resolve()),
            }
        )
    except ValidationError as exc:
        _raise_validation(source.file, "", exc)
        raise  # unreachable; keeps type checkers honest


def random_session_key() -> bytes:
    return secrets.token_bytes(32)
