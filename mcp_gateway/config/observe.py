"""`[logging]` and `[otel]`: how the served process logs and traces."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, field_validator

from mcp_gateway.config.common import FROZEN


class LoggingConfig(BaseModel):
    """`[logging]`: how the process logs (its own lines and uvicorn's)."""

    model_config = FROZEN

    format: Literal["text", "json"] = "text"  # json: one object per line, with the request's event and trace ids
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"  # `serve --log-level` overrides it


class OtelConfig(BaseModel):
    """`[otel]`: OpenTelemetry traces over OTLP/HTTP (needs the `mcp-gateway[otel]` extra). Absent: no tracing."""

    model_config = FROZEN

    endpoint: str  # the OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces
    service_name: str = "mcp-gateway"  # the service.name resource attribute of every span

    @field_validator("endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value
