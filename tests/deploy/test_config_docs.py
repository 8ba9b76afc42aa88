"""docs/configuration.md is generated from the config models by scripts/gen-config-docs, and is never stale."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mcp_gateway.config import AuditConfig, AuthConfig, GatewayConfig, ServerEntry
from mcp_gateway.config.credentials import Credentials
from tests.deploy._files import ROOT

DOC = ROOT / "docs" / "configuration.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _documented(section: str) -> set[str]:
    text = DOC.read_text()
    start = text.index(f"### {section}\n")
    end = text.find("\n### ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return set(re.findall(r"(?m)^\| `([a-z_0-9]+)` \|", body))


def test_configuration_md_is_what_the_generator_writes_from_the_current_models() -> None:
    generated = _generator().render(_generator().sections())
    assert DOC.read_text(encoding="utf-8") == generated, (
        "docs/configuration.md is stale: run scripts/gen-config-docs and commit the result"
    )


def test_every_key_of_every_table_is_documented_with_a_description() -> None:
    sections = {section.title: section for section in _generator().sections()}
    tables = {"auth", "audit", "policy", "rate_limits", "logging", "otel"}
    for title, model, skip in (
        ("gateway.toml: top level", GatewayConfig, {"servers", "base_dir", "policy_version", "config_file", *tables}),
        ("[auth]", AuthConfig, set()),
        ("[audit]", AuditConfig, set()),
        ("[servers.NAME]", ServerEntry, {"name", "credentials", "rate_limits"}),
        ("[servers.NAME.credentials]", Credentials, set()),
    ):  # fmt: skip
        expected = set(model.model_fields) - skip
        assert {key.name for key in sections[title].keys} >= expected, title
        assert _documented(title) >= expected, f"{title}: missing from docs/configuration.md"
        for key in sections[title].keys:
            assert key.description and key.type and key.default, f"{title} {key.name}"


def test_descriptions_come_from_the_comment_on_the_field_in_its_model() -> None:
    sections = {section.title: section for section in _generator().sections()}
    keys = {key.name: key for key in sections["[audit]"].keys}
    # `url: str | None = None  # a shared store's URL; ...` in mcp_gateway/config/__init__.py
    assert keys["url"].description.startswith("a shared store's URL")
    assert keys["url"].type == "string (optional)" and keys["url"].default == "(absent)"
    assert keys["synchronous"].type == '"full" \\| "normal"' and keys["synchronous"].default == '`"full"`'
    # The comment block above a field describes it when its own line has none.
    auth = {key.name: key for key in sections["[auth]"].keys}
    assert auth["jwks_max_stale_seconds"].description.startswith("While the JWKS endpoint fails")
    assert auth["leeway_seconds"].default == "`60`; ≥ `0`, ≤ `600`"


def test_the_check_mode_reports_a_stale_file_and_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    assert _generator().main(["--check", "--output", str(stale)]) == 1
    assert "is stale: run scripts/gen-config-docs" in capsys.readouterr().err
    assert _generator().main(["--output", str(stale)]) == 0
    assert _generator().main(["--check", "--output", str(stale)]) == 0
