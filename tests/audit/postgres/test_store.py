"""`[audit] url = "postgresql://…"` (or postgres://) selects the PostgreSQL store; nothing connects until start."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.audit.postgres import PostgresAuditReader, PostgresAuditSink
from mcp_gateway.audit.store import AuditReader, AuditSink
from mcp_gateway.audit.stores import audit_location, open_audit_reader, open_audit_store
from mcp_gateway.config import load_config
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
