"""The Dockerfile, deploy/compose.yaml and deploy/kubernetes/ agree with each other and with the gateway:
ports, probe paths, environment variables, grace periods, the user the image runs as, and configurations
that the gateway's own `load_config` accepts."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from mcp_gateway.config import GatewayConfig
from mcp_gateway.devissuer.config import IssuerSettings
from tests._stack import gateway_stack
from tests.deploy._files import (
    COMPOSE_CONFIG,
    DEPLOY,
    ROOT,
    compose,
    dockerfile_instructions,
    env_names_in,
    exec_form,
    final_stage,
    kubernetes,
    load_deployed_config,
    toml,
)

DRAIN_DEFAULT_SECONDS = 20  # DESIGN.md: shutdown_grace_seconds defaults to 20


def _compose_files() -> dict[str, str]:
    return {name: (COMPOSE_CONFIG / name).read_text() for name in ("gateway.toml", "server_allowlist.toml")}


def _configmap_files() -> dict[str, str]:
    data: dict[str, str] = kubernetes("ConfigMap")["data"]
    return data


def _gateway_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {name: s for name, s in services.items() if s.get("command", [None])[0] == "serve"}


def _container() -> dict[str, Any]:
    containers = kubernetes("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _healthcheck_url() -> str:
    (arguments,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = exec_form(arguments.split("CMD", 1)[1])
    urls = re.findall(r"https?://[^'\"\s]+", " ".join(command))
    assert len(urls) == 1, f"expected one default URL in the HEALTHCHECK, got {urls}"
    return urls[0]


def _shutdown_grace_default() -> int:
    field = GatewayConfig.model_fields.get("shutdown_grace_seconds")
    return int(field.default) if field is not None else DRAIN_DEFAULT_SECONDS


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_deployed_configs_pass_the_gateway_s_own_validation(where: str, tmp_path: Path) -> None:
    files = _compose_files() if where == "compose" else _configmap_files()
    config = load_deployed_config(files, tmp_path)
    assert config.host == "0.0.0.0", "in a container the gateway must listen beyond loopback"
    assert config.session_key_env, "replicas must share a session key"
    assert config.audit.url is not None and config.audit.url.startswith("postgresql://")
    assert (config.rate_limits.redis_url or "").startswith("redis://"), "replicas must share limits in Redis"
    assert config.servers, "the allowlist names at least one upstream"


def test_compose_runs_two_gateway_replicas_of_one_image_behind_a_load_balancer() -> None:
    gateways = _gateway_services()
    assert len(gateways) == 2
    first, second = gateways.values()
    assert first == second, "the replicas differ in more than their name"
    assert first["command"] == ["serve", "--config", "/config/gateway.toml"]
    assert first["build"]["context"] == ".." and (DEPLOY / first["build"]["context"] / "Dockerfile").exists()
    lb = compose()["services"]["lb"]
    assert set(lb["depends_on"]) == set(gateways)
    assert all(lb["depends_on"][name]["condition"] == "service_healthy" for name in gateways)


def test_the_load_balancer_sends_to_every_replica_on_the_configured_port(tmp_path: Path) -> None:
    config = load_deployed_config(_compose_files(), tmp_path)
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    backends = re.findall(r"(?m)^\s*server\s+([\w.-]+):(\d+)", nginx)
    assert sorted(name for name, _ in backends) == sorted(_gateway_services())
    assert {int(port) for _, port in backends} == {config.port}
    lb = compose()["services"]["lb"]
    published = lb["ports"][0].rsplit(":", 2)
    assert published[0] == "127.0.0.1" and re.search(r"listen\s+(\d+);", nginx)[1] == published[2]  # type: ignore[index]
    # Clients use public_url, so the load balancer must be published exactly there, Host passed through.
    public = urlsplit(config.public_url)
    assert (public.hostname, public.port) == (published[0], int(published[1]))
    assert "proxy_set_header Host $http_host;" in nginx
    assert "proxy_buffering off;" in nginx, "SSE streams must not be buffered by the load balancer"
    # nginx must stop reusing an idle upstream connection before the gateway closes it.
    keepalive = re.search(r"keepalive_timeout\s+(\d+)s;", nginx)
    assert keepalive is not None and int(keepalive[1]) < config.idle_connection_seconds


def test_compose_replicas_share_the_session_key_the_audit_log_and_redis(tmp_path: Path) -> None:
    config = load_deployed_config(_compose_files(), tmp_path)
    services = compose()["services"]
    for gateway in _gateway_services().values():
        assert config.session_key_env in gateway["environment"]
        assert "PGPASSWORD" in gateway["environment"]
        assert set(gateway["depends_on"]) >= {"postgres", "redis"}
    audit = urlsplit(config.audit.url or "")
    assert (audit.hostname, audit.port, audit.path) == (
        "postgres",
        5432,
        "/" + services["postgres"]["environment"]["POSTGRES_DB"],
    )
    assert audit.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert audit.password is None, "the password comes from PGPASSWORD, never from the file"
    # The gateways' PGPASSWORD and the server's POSTGRES_PASSWORD come from the same variable.
    pg_password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert _gateway_services()["gateway-1"]["environment"]["PGPASSWORD"] == pg_password
    redis = urlsplit(config.rate_limits.redis_url or "")
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_every_environment_variable_a_config_names_is_set_for_the_gateway(where: str, tmp_path: Path) -> None:
    files = _compose_files() if where == "compose" else _configmap_files()
    config = load_deployed_config(files, tmp_path)
    named = env_names_in(config, toml(files["gateway.toml"]))
    assert config.session_key_env in named
    if where == "compose":
        provided = {name for s in _gateway_services().values() for name in s["environment"]}
    else:
        provided = {entry["name"] for entry in _container()["env"]}
        for entry in _container()["env"]:  # secrets come from a Secret, never inline
            assert "valueFrom" in entry and "value" not in entry, entry["name"]
    assert named <= provided, f"named by the config but not set: {sorted(named - provided)}"


def test_the_compose_issuer_and_upstream_are_the_ones_the_config_names(tmp_path: Path) -> None:
    config = load_deployed_config(_compose_files(), tmp_path)
    services = compose()["services"]
    issuer = IssuerSettings.model_validate(toml((COMPOSE_CONFIG / "issuer.toml").read_text()))
    assert config.auth is not None and config.auth.issuer == issuer.issuer
    jwks = urlsplit(config.auth.jwks_uri or "")
    issuer_command = services["issuer"]["command"]
    assert jwks.hostname == "issuer" and str(jwks.port) == issuer_command[issuer_command.index("--port") + 1]
    assert issuer.signing_key.startswith("/data/") and any(v.endswith(":/data") for v in services["issuer"]["volumes"])
    upstream = urlsplit(config.servers["everything"].url)
    command = services["everything"]["command"]
    assert upstream.hostname == "everything"
    assert str(upstream.port) == command[command.index("--port") + 1]
    # The example upstream refuses Host values it does not know (DNS-rebinding protection).
    assert command[command.index("--allowed-host") + 1] == upstream.hostname
    assert services["everything"]["entrypoint"][-1] == "/app/examples/everything_server.py"
    copies = [args.split() for keyword, args in final_stage() if keyword == "COPY"]
    assert any(c[-1] == "/app/examples/everything_server.py" for c in copies)


def test_the_dockerfile_exposes_and_probes_the_configured_port(tmp_path: Path) -> None:
    stage = final_stage()
    exposed = {int(args.split("/")[0]) for keyword, args in stage if keyword == "EXPOSE"}
    for files in (_compose_files(), _configmap_files()):
        port = load_deployed_config(files, tmp_path / str(len(list(tmp_path.iterdir())))).port
        assert exposed == {port}
    health = urlsplit(_healthcheck_url())
    assert (health.hostname, health.port, health.path) == ("127.0.0.1", min(exposed), "/healthz")
    (cmd,) = [exec_form(args) for keyword, args in stage if keyword == "CMD"]
    (entrypoint,) = [exec_form(args) for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert [*entrypoint, *cmd] == ["mcp-gateway", "serve", "--config", "/config/gateway.toml"]


def test_the_image_runs_as_a_non_root_user_with_only_data_writable() -> None:
    stage = final_stage()
    (user,) = [args for keyword, args in stage if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot can check it)"
    assert [keyword for keyword, _ in dockerfile_instructions()].count("FROM") >= 2, "a multi-stage build"
    assert any(keyword == "VOLUME" and "/data" in args for keyword, args in stage)
    assert any(keyword == "RUN" and "chown" in args and "/data" in args for keyword, args in stage)
    pod = kubernetes("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    security = _container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in _container()["volumeMounts"]}
    assert {"/data", "/config"} <= mounts
    for gateway in _gateway_services().values():
        assert gateway["read_only"] is True
        assert "user" not in gateway, "compose must not override the image's non-root user"


def test_kubernetes_ports_selectors_and_budget_line_up(tmp_path: Path) -> None:
    config = load_deployed_config(_configmap_files(), tmp_path)
    deployment = kubernetes("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert set(ports.values()) == {config.port}
    service = kubernetes("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert ports.get(target, target) == config.port
    for probe in ("readinessProbe", "livenessProbe"):
        port = _container()[probe]["httpGet"]["port"]
        assert ports.get(port, port) == config.port
    budget = kubernetes("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"], "the budget must allow a drain"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_map = kubernetes("ConfigMap")
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert _container()["args"] == ["serve", "--config", "/config/gateway.toml"]


def test_the_grace_periods_outlast_the_drain() -> None:
    drain = _shutdown_grace_default()
    pod = kubernetes("Deployment")["spec"]["template"]["spec"]
    pre_stop = " ".join(_container()["lifecycle"]["preStop"]["exec"]["command"])
    pause = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop)[1])  # type: ignore[index]
    # Kubernetes counts the preStop hook inside terminationGracePeriodSeconds.
    assert pod["terminationGracePeriodSeconds"] > pause + drain
    for gateway in _gateway_services().values():
        assert int(gateway["stop_grace_period"].rstrip("s")) > drain


def test_probe_paths_are_the_ones_the_kubernetes_probes_and_the_healthcheck_use() -> None:
    assert _container()["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert _container()["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert urlsplit(_healthcheck_url()).path == "/healthz"


@pytest.mark.anyio
async def test_every_probe_path_answers_200_from_a_serving_gateway_and_the_healthcheck_passes(tmp_path: Path) -> None:
    paths = {
        _container()["readinessProbe"]["httpGet"]["path"],
        _container()["livenessProbe"]["httpGet"]["path"],
        urlsplit(_healthcheck_url()).path,
    }
    (arguments,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = exec_form(arguments.split("CMD", 1)[1])
    assert command[0] == "python"
    async with gateway_stack(tmp_path, front_door=True) as stack, httpx2.AsyncClient(base_url=stack.base_url) as http:
        with anyio.fail_after(20):
            for path in sorted(paths):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
            url = stack.base_url + urlsplit(_healthcheck_url()).path
            passed = await anyio.run_process(
                [sys.executable, *command[1:]], env={**os.environ, "MCP_GATEWAY_HEALTH_URL": url}, check=False
            )
            missing = await anyio.run_process(
                [sys.executable, *command[1:]],
                env={**os.environ, "MCP_GATEWAY_HEALTH_URL": stack.base_url + "/no-such-route"},
                check=False,
            )
    assert passed.returncode == 0, passed.stderr.decode()
    assert missing.returncode != 0, "the healthcheck must fail when /healthz does not answer 200"


def test_the_build_context_keeps_every_file_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:  # Docker's rule: the last matching pattern wins; "!" re-includes
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            body = body.rstrip("/")
            if fnmatch.fnmatch(path, body) or fnmatch.fnmatch(path, body + "/*") or body == "**":
                keep = negate
        return keep

    sources = [
        source
        for keyword, args in dockerfile_instructions()
        if keyword == "COPY" and "--from=" not in args
        for source in args.split()[:-1]
    ]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        source = source.rstrip("/").removeprefix("./")
        assert (ROOT / source).exists(), source
        files = [source] if (ROOT / source).is_file() else [
            str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")
        ]  # fmt: skip
        assert all(included(f) for f in files), f"{source} is excluded by .dockerignore"
    assert not included("tests/test_config.py") and not included(".venv/bin/python")


def test_docker_smoke_skips_plainly_where_no_container_engine_is_usable() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "docker-smoke")],
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", "CI": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("docker-smoke: SKIPPED: "), result.stdout
    in_ci = subprocess.run(
        [str(ROOT / "scripts" / "docker-smoke")],
        env={**os.environ, "CI": "true", "MCP_GATEWAY_DOCKER_SMOKE": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert in_ci.returncode == 0 and "SKIPPED: running in CI" in in_ci.stdout
