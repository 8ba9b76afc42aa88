"""Structured logs: text or one JSON object per line, the request's ids attached, secrets redacted.

`log_config(...)` is a `logging.config.dictConfig` document, given to uvicorn (`build_server`) so that its own
lines go through the same handler and formatter as ours. Nothing logs request headers; on top of that every
line, traceback included, passes through a redactor that replaces the known secret values (upstream
credentials, the introspection client secret, the session key) and anything shaped like a bearer token or a
JWT, so that a token or credential never reaches a log even when an exception message carries one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from mcp_gateway.config import GatewayConfig, LoggingConfig
from mcp_gateway.observe import context

REDACTED = "[REDACTED]"
_MIN_SECRET = 8  # shorter values would match ordinary words and corrupt lines (as in credentials/static.py)
# A bearer credential after its scheme, and anything shaped like a JWS/JWE (base64url header starting `eyJ`).
_PATTERNS = re.compile(
    r"(?i)(?<=bearer )[A-Za-z0-9\-._~+/]+=*|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,3}"
)
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class Redactor:
    """Replaces known secret values and token-shaped strings in a finished log line."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _PATTERNS.sub(REDACTED, text)


class TextFormatter(logging.Formatter):
    """`2026-01-01 12:00:00,000 INFO mcp_gateway: message [event_id=… trace_id=…]`, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{name}={value}" for name, value in _ids()]
        return self.redactor(f"{line} [{' '.join(ids)}]" if ids else line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's ids, extras, exception."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_ids())
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return self.redactor(json.dumps(out, ensure_ascii=False, separators=(",", ":")))


def _ids() -> list[tuple[str, str]]:
    ids = []
    event = context.event_id.get()
    if event is not None:
        ids.append(("event_id", event))
    trace = context.trace_id.get()
    if trace is not None:
        ids.append(("trace_id", trace))
    return ids


def known_secrets(config: GatewayConfig, env: Mapping[str, str]) -> list[str]:
    """The secret values this configuration makes the process hold, looked up where it looks them up."""
    names = [config.session_key_env] if config.session_key_env else []
    files: list[str] = []
    if config.auth is not None and config.auth.client_secret_env:
        names.append(config.auth.client_secret_env)
    for entry in config.servers.values():
        credentials = entry.credentials
        if credentials is not None:
            for key, value in credentials.model_dump().items():
                if isinstance(value, str) and key.endswith("_env"):
                    names.append(value)
                elif isinstance(value, str) and key.endswith("_file"):
                    files.append(value)
    values = [env[name] for name in names if env.get(name)]
    for file in files:  # the value at start-up; a rotated file's new value is still caught by the patterns
        try:
            text = config.path_for(file).read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        values.append(text)
        values.extend(line.strip() for line in text.splitlines() if len(line.strip()) >= 32)  # PEM body lines
    return values


def log_config(settings: LoggingConfig, redactor: Redactor) -> dict[str, Any]:
    """The dictConfig document for the process: one stderr handler on the root, uvicorn's loggers through it."""
    formatter = JsonFormatter if settings.format == "json" else TextFormatter
    level = settings.level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": formatter, "redactor": redactor}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "gateway", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's loggers normally carry their own handlers; here they propagate to ours instead.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            # The outbound HTTP client logs response headers at debug level: never, whatever the level asked.
            "httpx2": {"level": "WARNING"},
            "httpcore2": {"level": "WARNING"},
        },
    }
