"""mcp-gateway: an MCP-native security proxy."""

from __future__ import annotations

from mcp_gateway.app import Gateway, create_app
from mcp_gateway.config import GatewayConfig, ServerEntry, load_config
from mcp_gateway.errors import (
    AuditUnavailable,
    AuthError,
    AuthUnavailable,
    ConfigError,
    GatewayError,
    HTTPError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    LimitStoreUnavailable,
    MissingToken,
    ProtocolRejected,
    RateLimited,
    SessionNotFound,
    TransportRejected,
    UpstreamConnectError,
    UpstreamError,
    UpstreamIdentityError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "AuditUnavailable",
    "AuthError",
    "AuthUnavailable",
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "HTTPError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "LimitStoreUnavailable",
    "MissingToken",
    "ProtocolRejected",
    "RateLimited",
    "ServerEntry",
    "SessionNotFound",
    "TransportRejected",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamIdentityError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "__version__",
    "create_app",
    "load_config",
]
