"""Reading the deployment files the way their engines would: the Dockerfile's instructions, the YAML documents,
and the gateway configurations they carry, validated by the gateway's own `load_config`."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from mcp_gateway.config import GatewayConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_CONFIG = DEPLOY / "compose" / "config"
KUBERNETES = DEPLOY / "kubernetes"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    out = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: the image that runs."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list, or the shell form split as a shell would."""
    text = arguments.strip()
    if text.startswith("["):
        return list(yaml.safe_load(text))
    return shlex.split(text)


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubernetes(kind: str) -> dict[str, Any]:
    found = [
        doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml_documents(path) if doc.get("kind") == kind
    ]
    assert len(found) == 1, f"expected one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def load_deployed_config(files: dict[str, str], target: Path) -> GatewayConfig:
    """Write `files` (name → text) into `target` and load them with the gateway's own validation."""
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (target / name).write_text(text)
    return load_config(target / "gateway.toml")


def toml(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def env_names_in(config: GatewayConfig, raw_gateway_toml: dict[str, Any]) -> set[str]:
    """Every environment variable the configuration names (`*_env` keys), whether or not the model knows it."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("_env") and isinstance(item, str):
                    names.add(item)
                walk(item)

    walk(raw_gateway_toml)
    walk({name: entry.model_dump() for name, entry in config.servers.items()})
    return names
