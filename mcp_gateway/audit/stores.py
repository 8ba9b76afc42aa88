"""Choosing the audit store from `[audit]`: one registry line per kind of store, one factory for each half.

A new store is one module exposing `STORE` (an `AuditStore`) plus one line in `_STORES`. Modules are
imported only when configured, so a store's driver is never loaded by a gateway that does not use it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from mcp_gateway.audit.sink import NullAuditSink
from mcp_gateway.audit.store import AuditLocation, AuditReader, AuditSink, AuditStore
from mcp_gateway.errors import ConfigError

if TYPE_CHECKING:
    from mcp_gateway.config import AuditConfig, GatewayConfig

logger = logging.getLogger("mcp_gateway")

# Location scheme → the module whose `STORE` serves it. "sqlite" is `[audit] database`; any other scheme
# comes from `[audit] url`.
_STORES: Final[Mapping[str, str]] = {
    "sqlite": "mcp_gateway.audit.sqlite",
    "postgresql": "mcp_gateway.audit.postgres",
    "postgres": "mcp_gateway.audit.postgres",
}


class UnknownAuditStore(LookupError):
    """No store is registered for a location's scheme."""


def audit_location(*, url: str | None, database: str, base_dir: str | Path) -> AuditLocation:
    """Where `[audit]` says the log is: `url` when given (its scheme picks the store), else the SQLite file
    `database`, relative to the config file's directory `base_dir`."""
    if url is not None:
        return AuditLocation(urlsplit(url).scheme.lower(), url)
    path = Path(database)
    return AuditLocation("sqlite", str(path if path.is_absolute() else Path(base_dir) / path))


def store_for(location: AuditLocation) -> AuditStore:
    """The registered store for `location`'s scheme; UnknownAuditStore if there is none."""
    module_name = _STORES.get(location.scheme)
    if module_name is None:
        known = ", ".join(sorted(_STORES))
        raise UnknownAuditStore(f"no audit store for {location.scheme!r} locations (known: {known})")
    store = getattr(importlib.import_module(module_name), "STORE", None)
    if not isinstance(store, AuditStore):
        raise TypeError(f"{module_name}.STORE is not an AuditStore")
    return store


def open_audit_store(config: GatewayConfig) -> AuditSink:
    """The writer `[audit]` selects, not started yet; `enabled = false` gives a sink that writes nothing."""
    settings: AuditConfig = config.audit
    if not settings.enabled:
        logger.warning("AUDIT IS DISABLED ([audit] enabled = false): no tool call will be recorded")
        return NullAuditSink()
    location = audit_location(url=settings.url, database=settings.database, base_dir=config.base_dir)
    try:
        store = store_for(location)
    except UnknownAuditStore as exc:
        raise ConfigError("gateway.toml", "audit.url", str(exc)) from None
    return store.open_sink(location, settings)


def open_audit_reader(location: AuditLocation) -> AuditReader:
    """A read-only view of the log at `location` (for `audit query | verify | export`)."""
    return store_for(location).open_reader(location)
