"""The hand-written docs name only commands and options that exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mcp_gateway.cli import build_parser
from tests.deploy._files import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))


def _commands() -> dict[str, argparse.ArgumentParser]:
    """`serve`, `audit verify`, ... → its parser."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_mcp_gateway_command_and_option_in_the_docs_exists(doc: Path) -> None:
    commands = _commands()
    text = doc.read_text()
    # Commands are in code: fenced blocks and `spans`; prose may say "mcp-gateway" in other senses.
    code = "\n".join(
        re.findall(r"(?s)```.*?```", text) + re.findall(r"`([^`\n]+)`", re.sub(r"(?s)```.*?```", "", text))
    )
    uses = re.findall(r"mcp-gateway((?: [a-z][a-z-]*)+)((?: --?[a-z][a-z-]*(?:[ =][^`\s]+)?)*)", code)
    for written, options in uses:
        words = written.split()
        while words and " ".join(words) not in commands:
            words.pop()  # trailing words are arguments (`allowlist pin NAME`)
        assert words, f"{doc.name}: no such command: `mcp-gateway{written}`"
        parser = commands[" ".join(words)]
        known = {flag for action in parser._actions for flag in action.option_strings}
        for flag in re.findall(r"(--[a-z][a-z-]*)", options):
            assert flag in known, f"{doc.name}: `mcp-gateway {' '.join(words)}` has no option {flag}"
