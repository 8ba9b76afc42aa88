"""The console's read-only view of the audit log: `GET /audit/records` (filtered calls) and `GET /audit/verify`.

Reads go through `open_audit_reader`, the same reader `mcp-gateway audit query | verify` use, off the event
loop. Callers must hold `audit:read` (checked by `http.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from mcp_gateway.audit.query import QueryFilters, parse_time
from mcp_gateway.audit.store import AuditReader
from mcp_gateway.audit.stores import audit_location, open_audit_reader
from mcp_gateway.config import GatewayConfig

logger = logging.getLogger("mcp_gateway")

RECORDS_PATH: Final = "/audit/records"
VERIFY_PATH: Final = "/audit/verify"
DEFAULT_LIMIT: Final = 200
MAX_LIMIT: Final = 1000
# Query parameter → QueryFilters attribute (exact matches), as `audit query` names them.
_UNREADABLE: Final = "the audit log cannot be read; run `mcp-gateway audit verify`"
_FILTERS: Final = ("agent", "user", "server", "tool", "decision", "outcome", "session")


class AuditReadAPI:
    def __init__(self, config: GatewayConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock

    def _reader(self) -> AuditReader:
        settings = self.config.audit
        location = audit_location(url=settings.url, database=settings.database, base_dir=self.config.base_dir)
        return open_audit_reader(location)

    async def answer(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        """(status, JSON value) for one GET under /audit/."""
        if not self.config.audit.enabled:
            return 404, {"error": "not_found", "message": "auditing is disabled ([audit] enabled = false)"}
        if path == RECORDS_PATH:
            try:
                filters = filters_from(query, self.clock())
            except ValueError as exc:
                return 400, {"error": "invalid_request", "message": str(exc)}
            no_log: dict[str, Any] = {"records": [], "limit": filters.limit}
            return await self._read(lambda reader: {**no_log, "records": list(reader.query(filters))}, no_log)
        if path == VERIFY_PATH:
            return await self._read(lambda reader: dataclasses.asdict(reader.verify()), {"ok": True, "records": 0})
        return 404, {"error": "not_found", "message": "Not Found"}

    async def _read(self, work: Callable[[AuditReader], Any], no_log: Any) -> tuple[int, Any]:
        def run() -> Any:
            return work(self._reader())

        try:
            return 200, await asyncio.to_thread(run)
        except FileNotFoundError:
            return 200, no_log  # nothing recorded yet
        except Exception as exc:  # the store's own errors (paths, driver messages) stay in our logs
            logger.warning("the audit log could not be read for the console: %s", exc)
            return 503, {"error": "unavailable", "message": _UNREADABLE}


def filters_from(query: Mapping[str, str], now: float) -> QueryFilters:
    """QueryFilters from the console's query string (`since`/`until` as `audit query` takes them)."""
    values: dict[str, Any] = {name: query[name] for name in _FILTERS if query.get(name)}
    for bound in ("since", "until"):
        if query.get(bound):
            values[bound] = parse_time(query[bound], now)
    raw = query.get("limit") or str(DEFAULT_LIMIT)
    if not raw.isdigit():
        raise ValueError("limit must be a whole number")
    values["limit"] = max(1, min(MAX_LIMIT, int(raw)))
    return QueryFilters(**values)
