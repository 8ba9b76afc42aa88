"""`[audit] url = "postgresql://…"` (or postgres://) selects the PostgreSQL store; nothing connects until start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
import pytest

from mcp_gateway.audit.postgres import PostgresAuditReader, PostgresAuditSink
from mcp_gateway.audit.store import AuditReader, AuditSink
from mcp_gateway.audit.stores import audit_location, open_audit_reader, open_audit_store
from mcp_gateway.config import load_config
from mcp_gateway.errors import AuditUnavailable
from tests._configs import GATEWAY, write_config


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_opens_the_postgresql_sink_and_reader(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}://gateway@db.invalid:5432/audit"
    write_config(tmp_path, gateway=GATEWAY + f'[audit]\nurl = "{url}"\n')
    sink = open_audit_store(load_config(tmp_path / "gateway.toml"))
    assert isinstance(sink, PostgresAuditSink) and isinstance(sink, AuditSink)
    assert sink.url == url and not sink.healthy and sink.backend_pid is None
    reader = open_audit_reader(audit_location(url=url, database="audit.db", base_dir=tmp_path))
    assert isinstance(reader, PostgresAuditReader) and isinstance(reader, AuditReader)


def test_two_sinks_get_two_chains() -> None:
    assert PostgresAuditSink("postgresql://x/y").chain_id != PostgresAuditSink("postgresql://x/y").chain_id


def test_messages_never_show_the_password_of_the_url() -> None:
    from mcp_gateway.audit.postgres.schema import display_url

    assert display_url("postgresql://gw:s3cret@db:5432/audit") == "postgresql://gw:***@db:5432/audit"
    assert display_url("postgresql://gw@db/audit") == "postgresql://gw@db/audit"


@pytest.mark.anyio
async def test_audit_timeout_seconds_bounds_the_wait_on_a_database_that_never_answers(tmp_path: Path) -> None:
    # [audit] timeout_seconds: a stuck database turns into a refusal (503 upstream of here) this fast,
    # never into a call that hangs; the default is 5 s, so 0.3 s here shows the setting reached the sink.
    writers: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the sink gives up and closes

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql://gateway@127.0.0.1:{port}/audit"
    write_config(tmp_path, gateway=GATEWAY + f'[audit]\nurl = "{url}"\ntimeout_seconds = 0.3\n')
    sink = open_audit_store(load_config(tmp_path / "gateway.toml"))
    started = time.monotonic()
    try:
        with anyio.fail_after(3), pytest.raises(AuditUnavailable):
            await sink.start()
        assert time.monotonic() - started < 2.0
    finally:
        await sink.aclose()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
