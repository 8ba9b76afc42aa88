from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.app import create_app
from mcp_gateway.audit import stores
from mcp_gateway.audit.cli import main
from mcp_gateway.audit.record import GENESIS_HASH
from mcp_gateway.audit.sink import MemoryAuditSink, NullAuditSink
from mcp_gateway.audit.sqlite import SQLiteAuditReader, SQLiteAuditSink
from mcp_gateway.audit.store import AuditLocation, AuditReader, AuditStore
from mcp_gateway.audit.stores import audit_location, open_audit_reader, open_audit_store, store_for
from mcp_gateway.config import GatewayConfig, load_config
from mcp_gateway.errors import ConfigError
from tests._configs import GATEWAY, write_config

from . import _memory_store


def config_with(tmp_path: Path, audit: str) -> GatewayConfig:
    write_config(tmp_path, gateway=GATEWAY + "[audit]\n" + audit)
    return load_config(tmp_path / "gateway.toml")


@pytest.fixture
def memory_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "_STORES", {**stores._STORES, "memory": _memory_store.__name__})


def test_database_selects_the_sqlite_store_at_the_path_beside_the_config(tmp_path: Path) -> None:
    sink = open_audit_store(config_with(tmp_path, 'database = "logs/audit.db"\nsynchronous = "normal"\n'))
    assert isinstance(sink, SQLiteAuditSink)
    assert sink.path == tmp_path.resolve() / "logs" / "audit.db"
    assert sink.synchronous == "normal"


def test_create_app_builds_its_store_through_the_factory(tmp_path: Path) -> None:
    assert isinstance(create_app(config_with(tmp_path, "")).audit, SQLiteAuditSink)
    assert isinstance(create_app(config_with(tmp_path, "enabled = false\n")).audit, NullAuditSink)


def test_audit_off_opens_no_store(tmp_path: Path) -> None:
    assert isinstance(open_audit_store(config_with(tmp_path, "enabled = false\n")), NullAuditSink)


def test_a_url_selects_the_store_registered_for_its_scheme(tmp_path: Path, memory_registered: None) -> None:
    sink = open_audit_store(config_with(tmp_path, 'url = "memory://shared/log"\n'))
    assert type(sink) is MemoryAuditSink


def test_a_url_whose_scheme_has_no_store_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_audit_store(config_with(tmp_path, 'url = "mysql://127.0.0.1/test"\n'))
    assert info.value.key == "audit.url"
    assert "'mysql'" in str(info.value) and "sqlite" in str(info.value)


def test_the_location_is_the_url_when_given_else_the_database_path(tmp_path: Path) -> None:
    url = "postgresql://127.0.0.1/test"
    assert audit_location(url=url, database="audit.db", base_dir=tmp_path) == AuditLocation("postgresql", url)
    relative = audit_location(url=None, database="a.db", base_dir=tmp_path)
    assert relative == AuditLocation("sqlite", str(tmp_path / "a.db"))
    assert audit_location(url=None, database="/var/a.db", base_dir=tmp_path) == AuditLocation("sqlite", "/var/a.db")


def test_every_registered_store_and_its_reader_satisfy_the_protocols(tmp_path: Path, memory_registered: None) -> None:
    (tmp_path / "audit.db").touch()
    for location in (AuditLocation("sqlite", str(tmp_path / "audit.db")), AuditLocation("memory", "memory://")):
        assert isinstance(store_for(location), AuditStore)
        assert isinstance(open_audit_reader(location), AuditReader)
    assert isinstance(open_audit_reader(AuditLocation("sqlite", str(tmp_path / "audit.db"))), SQLiteAuditReader)


def test_a_reader_of_a_missing_sqlite_file_is_refused_without_creating_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no audit database"):
        open_audit_reader(AuditLocation("sqlite", str(tmp_path / "nope.db")))
    assert not (tmp_path / "nope.db").exists()


def test_the_cli_reads_whichever_store_the_config_url_names(
    tmp_path: Path, memory_registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config_with(tmp_path, 'url = "memory://shared/log"\n')
    assert main(["audit", "verify", "--config", str(tmp_path / "gateway.toml")]) == 0
    assert capsys.readouterr().out == f"audit log intact: 0 records; head seq 0 hash {GENESIS_HASH}\n"


def test_the_cli_refuses_a_url_with_no_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_with(tmp_path, 'url = "mysql://127.0.0.1/test"\n')
    assert main(["audit", "verify", "--config", str(tmp_path / "gateway.toml")]) == 2
    assert "no audit store for 'mysql'" in capsys.readouterr().err
