"""What every configuration model shares: frozen strict models, the scope-token type, URL checks."""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field

FROZEN = ConfigDict(frozen=True, extra="forbid")

Scope = Annotated[str, Field(min_length=1, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]  # RFC 6749 §3.3 scope-token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def absolute_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment and "#" not in value


def secure_or_loopback(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme == "https" or is_loopback(parts.hostname or "")
