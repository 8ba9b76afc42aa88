"""Structured logs: one JSON object per line with the request's ids, uvicorn's lines too, never a secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx2
import pytest

from mcp_gateway.config import LoggingConfig
from mcp_gateway.observe import context
from mcp_gateway.observe.logs import JsonFormatter, Redactor, TextFormatter, log_config
from tests._mcp import modern_headers
from tests.e2e._audit_support import json_rows, run_cli
from tests.observe._process import UPSTREAM_SECRET, served_gateway
from tests.proxy._support import modern_call_body

pytestmark = pytest.mark.anyio


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"failed with Bearer {UPSTREAM_SECRET}")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    return logging.LogRecord("mcp_gateway", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_lines_carry_the_event_and_trace_ids_of_the_request_that_logged_them() -> None:
    formatter = JsonFormatter(Redactor())
    event_token = context.event_id.set("evt-1")
    trace_token = context.trace_id.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        line = json.loads(formatter.format(_record("upstream %s failed", "everything")))
    finally:
        context.event_id.reset(event_token)
        context.trace_id.reset(trace_token)
    assert line["message"] == "upstream everything failed"
    assert (line["level"], line["logger"]) == ("warning", "mcp_gateway")
    assert (line["event_id"], line["trace_id"]) == ("evt-1", "4bf92f3577b34da6a3ce929d0e0e4736")
    assert "event_id" not in json.loads(formatter.format(_record("outside any request")))


def test_known_secrets_bearer_values_and_jwts_are_redacted_in_messages_and_tracebacks() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    redactor = Redactor([UPSTREAM_SECRET, "short"])
    for formatter in (JsonFormatter(redactor), TextFormatter(redactor)):
        text = formatter.format(_record("got %s and %s then short", jwt, "sk-" + UPSTREAM_SECRET, exc=True))
        assert UPSTREAM_SECRET not in text and jwt not in text and "eyJhbGciOiJFUzI1NiJ9" not in text
        assert "[REDACTED]" in text and "short" in text  # values under 8 characters are left alone


def test_the_log_config_sends_uvicorns_loggers_through_the_gateways_handler() -> None:
    document = log_config(LoggingConfig(format="json", level="debug"), Redactor())
    assert document["root"] == {"handlers": ["stderr"], "level": "DEBUG"}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert document["loggers"][name] == {"handlers": [], "level": "DEBUG", "propagate": True}
    assert document["formatters"]["gateway"]["()"] is JsonFormatter


@pytest.mark.slow
async def test_serve_writes_only_json_lines_with_event_ids_and_no_token_or_credential(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = '[logging]\nformat = "json"\nlevel = "debug"'
    async with served_gateway(tmp_path, extra) as served:
        token = served.token()
        forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
        async with httpx2.AsyncClient(timeout=10) as http:
            for presented, server in ((token, "everything"), (forged, "everything"), (served.token("dead"), "dead")):
                response = await http.post(
                    served.url(server),
                    headers=modern_headers(presented, "tools/call", "echo"),
                    json=modern_call_body("echo", {"password": "argument-CANARY"}),
                )
                assert response.status_code in (200, 401, 502), response.text
            await http.get(f"{served.url()}?access_token={token}")
        assert await served.stop() == 0
    lines = served.log.read_text().splitlines()
    assert lines, "serve logged nothing"
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    loggers = {line["logger"] for line in parsed}
    assert {"uvicorn.error", "mcp_gateway"} <= loggers, loggers
    assert not any(name.startswith("httpcore2") for name in loggers)  # it logs headers at debug level
    text = served.log.read_text()
    for secret in (token, forged, token.split(".")[1], UPSTREAM_SECRET, "argument-CANARY", "issuer-client-secret"):
        assert secret not in text
    (failure,) = [line for line in parsed if line["message"] == "upstream dead failed: UpstreamConnectError"]
    code, out = run_cli(capsys, "audit", "query", "--config", str(tmp_path / "gateway.toml"), "--format", "json")
    assert code == 0
    (dead,) = [row for row in json_rows(out) if row["mcp_server"] == "dead"]
    assert failure["event_id"] == dead["event_id"]
