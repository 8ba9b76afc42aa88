"""The gateway's other routes: health, readiness, metrics and RFC 9728 resource metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from tests._mcp import modern_headers
from tests._servers import refused_url
from tests._stack import Stack, gateway_stack
from tests.proxy._support import bare_gateway, modern_call_body

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with gateway_stack(tmp_path_factory.mktemp("endpoints")) as stack:
        yield stack


async def test_healthz_is_200(stack: Stack, http: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        response = await http.get(f"{stack.base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_once_the_token_keys_are_loaded(stack: Stack, http: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        response = await http.get(f"{stack.base_url}/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["checks"]["token_keys"] is True
    assert all(body["checks"].values())


async def test_readyz_is_503_and_every_token_is_refused_when_the_keys_could_not_be_loaded(
    stack: Stack, http: httpx2.AsyncClient, tmp_path: Path
) -> None:
    issuer = stack.issuer.issuer
    forwarded = len(stack.tap.requests)
    async with bare_gateway(
        tmp_path, upstream_url=stack.upstream_url, issuer=issuer, jwks_uri=f"{refused_url()}/jwks.json"
    ) as gateway:
        token = stack.token(["tools:read"], resource=f"{gateway.base_url}/everything/mcp")
        with anyio.fail_after(10):
            ready = await http.get(f"{gateway.base_url}/readyz")
            call = await http.post(
                f"{gateway.base_url}/everything/mcp",
                headers=modern_headers(token, "tools/call", "echo"),
                json=modern_call_body("echo", {"message": "x"}),
            )
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert body["checks"]["token_keys"] is False
    assert body["checks"]["config"] is True
    # Fail closed: the token cannot be checked, so it is refused as "unavailable", and nothing is forwarded.
    assert call.status_code == 503
    assert "signing keys are not available" in call.json()["error"]["message"]
    assert len(stack.tap.requests) == forwarded


async def test_metrics_count_requests_by_server_method_and_status(stack: Stack, http: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        refused = await http.post(stack.mcp_url(), headers={"content-type": "text/plain"}, content=b"x")
        metrics = await http.get(f"{stack.base_url}/metrics")
    assert refused.status_code == 415
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'mcp_gateway_requests_total{method="POST",server="everything",status="415"} 1.0' in metrics.text
    assert "mcp_gateway_request_seconds_bucket" in metrics.text


async def test_metrics_report_the_audit_stores_health_and_counters(stack: Stack, http: httpx2.AsyncClient) -> None:
    def value(text: str, name: str) -> float:
        (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
        return float(line.split()[1])

    with anyio.fail_after(10):
        before = (await http.get(f"{stack.base_url}/metrics")).text
        call = await http.post(
            stack.mcp_url(),
            headers=modern_headers(stack.token(), "tools/call", "echo"),
            json=modern_call_body("echo", {"message": "counted"}),
        )
        assert call.status_code == 200
        await stack.app.audit.flush()  # type: ignore[attr-defined]
        after = (await http.get(f"{stack.base_url}/metrics")).text
    assert value(after, "mcp_gateway_audit_healthy") == 1.0
    # The call's intent and outcome.
    appended = "mcp_gateway_audit_records_appended_total"
    assert value(after, appended) - value(before, appended) == 2.0
    for name in ("failed_batches_total", "records_lost_total", "queue_full_total", "records_rejected_total"):
        assert value(after, f"mcp_gateway_audit_{name}") == 0.0
    assert value(after, "mcp_gateway_audit_queue_depth") == 0.0


async def test_protected_resource_metadata_names_the_public_url_whatever_the_host_header(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    port = urlsplit(stack.base_url).port
    with anyio.fail_after(10):
        response = await http.get(
            f"{stack.base_url}/.well-known/oauth-protected-resource/everything/mcp",
            headers={"host": f"localhost:{port}"},
        )
    assert response.status_code == 200
    metadata = response.json()
    # RFC 9728 §3.3: `resource` is identical to the URL clients use, built from public_url, not Host.
    assert metadata["resource"] == f"{stack.config.public_url}/everything/mcp"
    assert metadata["resource"] == f"http://127.0.0.1:{port}/everything/mcp"
    assert metadata["authorization_servers"] == [stack.issuer.issuer]
    assert metadata["bearer_methods_supported"] == ["header"]


async def test_protected_resource_metadata_refuses_a_host_not_served_here(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    with anyio.fail_after(10):
        response = await http.get(
            f"{stack.base_url}/.well-known/oauth-protected-resource/everything/mcp",
            headers={"host": "rebound.attacker.example"},
        )
    assert response.status_code == 421


async def test_unknown_path_is_404(stack: Stack, http: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        response = await http.post(f"{stack.base_url}/nowhere/mcp", json={})
    assert response.status_code == 404


async def test_missing_token_is_401_with_resource_metadata(stack: Stack, http: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers={**modern_headers("x", "tools/call", "echo"), "authorization": ""},
            json=modern_call_body("echo", {"message": "x"}),
        )
    assert response.status_code == 401
    metadata_url = f"{stack.base_url}/.well-known/oauth-protected-resource/everything/mcp"
    assert response.headers["www-authenticate"] == f'Bearer scope="tools:read", resource_metadata="{metadata_url}"'
