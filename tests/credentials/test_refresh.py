"""Token lifetimes, refresh and failure: an injected clock, single flight, one refresh on 401, then a 502."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcp_gateway.audit.sqlite import SQLiteAuditReader
from mcp_gateway.credentials import CredentialRequest
from tests.credentials._support import GATEWAY_CLIENT, GATEWAY_SECRET, STATIC_TOKEN, credential_stack

pytestmark = pytest.mark.anyio

CLIENT_CREDENTIALS = (
    f'type = "oauth_client_credentials"\nclient_id = "{GATEWAY_CLIENT}"\nclient_secret_env = "GW_SECRET"\n'
    "refresh_before_seconds = 30\n"
)
SECRETS = {"GW_SECRET": GATEWAY_SECRET}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _request(server: str, url: str) -> CredentialRequest:
    return CredentialRequest(server, url, None, "tools/call", "echo", ())


async def test_a_client_credentials_token_is_reused_then_refreshed_before_it_expires(tmp_path: Path) -> None:
    clock = Clock()
    async with credential_stack(tmp_path, {"alpha": CLIENT_CREDENTIALS}, secrets=SECRETS, clock=clock) as stack:
        source = stack.app.routes["alpha"].credentials
        request = _request("alpha", stack.upstreams["alpha"].url)
        with anyio.fail_after(20):
            first = await source.issue(request)
            assert (await source.issue(request)).headers == first.headers  # cached
            assert stack.issuer_app.count("/token") == 1
            clock.now += 600 - 31  # the dev issuer's tokens live 600 s; refreshed 30 s before exp
            assert (await source.issue(request)).headers == first.headers
            clock.now += 2
            second = await source.issue(request)
        assert second.headers != first.headers and stack.issuer_app.count("/token") == 2
        assert second.use is not None and second.use.expires_in == 600


async def test_concurrent_calls_cause_one_token_fetch(tmp_path: Path) -> None:
    async with credential_stack(tmp_path, {"alpha": CLIENT_CREDENTIALS}, secrets=SECRETS) as stack:
        token = stack.token()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(stack.call, "alpha", "echo", token, {"message": "hi"})
        assert all('"hi"' in body for body in stack.bodies)
        assert stack.issuer_app.count("/token") == 1


async def test_an_upstream_401_causes_one_refresh_and_one_retry_and_a_second_401_a_502(tmp_path: Path) -> None:
    credentials = {"alpha": CLIENT_CREDENTIALS, "beta": 'type = "bearer"\ntoken_env = "BETA"\n'}
    async with credential_stack(tmp_path, credentials, secrets={**SECRETS, "BETA": STATIC_TOKEN}) as stack:
        token, alpha = stack.token(), stack.upstreams["alpha"]
        with anyio.fail_after(30):
            assert (await stack.call("alpha", "echo", token, {"message": "warm"})).status_code == 200
            before = len(alpha.tap.requests)
            alpha.refuser.refuse = 1  # the token is revoked: one 401 invalid_token
            retried = await stack.call("alpha", "echo", token, {"message": "again"})
            assert retried.status_code == 200 and '"again"' in retried.text
            assert stack.issuer_app.count("/token") == 2  # one refresh
            assert len(alpha.tap.requests) == before + 1  # the refused attempt never ran; the retry ran once
            alpha.refuser.refuse = 2  # refused again after the refresh: a credential failure, never a loop
            failed = await stack.call("alpha", "echo", token, {"message": "refused"})
            assert alpha.refuser.refuse == 0 and stack.issuer_app.count("/token") == 3
            other = await stack.call("beta", "echo", stack.token(server="beta"), {"message": "beta"})
            metrics = (await stack.http.get(f"{stack.base_url}/metrics")).text
            await stack.app.audit.flush()
        assert failed.status_code == 502
        message = failed.json()["error"]["message"]
        assert message == (
            "Bad Gateway: the upstream credential for alpha (oauth_client_credentials) failed: "
            "the upstream answered 401 after one refresh"
        )
        assert other.status_code == 200  # other upstreams are unaffected
        assert (
            'mcp_gateway_upstream_credential_failures_total{reason="upstream_refused",server="alpha",'
            'type="oauth_client_credentials"} 1.0' in metrics
        )
        rows = [r for r in SQLiteAuditReader(stack.directory / "audit.db").query() if r["http_status"] == 502]
        assert len(rows) == 1 and json.loads(rows[0]["upstream_credential"])["type"] == "oauth_client_credentials"


async def test_a_refusing_or_unreachable_token_endpoint_is_a_502_naming_the_credential(tmp_path: Path) -> None:
    credentials = {
        "alpha": CLIENT_CREDENTIALS,  # the secret below is wrong: the AS refuses
        "beta": CLIENT_CREDENTIALS.replace("client_id", 'token_url = "http://127.0.0.1:9/token"\nclient_id'),
    }
    async with credential_stack(tmp_path, credentials, secrets={"GW_SECRET": "wrong-secret-value-123"}) as stack:
        with anyio.fail_after(30):
            refused = await stack.call("alpha", "echo", stack.token(), {"message": "x"})
            unreachable = await stack.call("beta", "echo", stack.token(server="beta"), {"message": "x"})
    assert refused.status_code == 502 and unreachable.status_code == 502
    assert refused.json()["error"]["message"] == (
        "Bad Gateway: the upstream credential for alpha (oauth_client_credentials) failed: "
        "the authorization server refused the token request (401, invalid_client)"
    )
    assert unreachable.json()["error"]["message"].startswith(
        "Bad Gateway: the upstream credential for beta (oauth_client_credentials) failed: "
        "the token endpoint http://127.0.0.1:9/token could not be reached"
    )
    assert "wrong-secret-value-123" not in refused.text + unreachable.text
    for name in ("alpha", "beta"):  # no MCP request went upstream (alpha's discovery GET did)
        assert [method for method, _, _ in stack.upstreams[name].tap.requests if method == "POST"] == []


async def test_an_upstream_redirect_is_never_followed_with_a_credential(tmp_path: Path) -> None:
    async with credential_stack(tmp_path, {"alpha": CLIENT_CREDENTIALS}, secrets=SECRETS) as stack:
        beta = stack.upstreams["beta"]
        stack.upstreams["alpha"].refuser.redirect = beta.url  # another origin (another port)
        with anyio.fail_after(30):
            response = await stack.call("alpha", "echo", stack.token(), {"message": "x"})
    assert response.status_code == 502 and "redirect" in response.text
    assert beta.tap.requests == []  # the other origin saw nothing, let alone a credential


async def test_a_rotated_signing_key_stays_published_until_its_last_assertion_expires(tmp_path: Path) -> None:
    def pem() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    (tmp_path / "key.pem").write_bytes(pem())
    clock = Clock()
    assertion = 'type = "signed_assertion"\nprivate_key_file = "key.pem"\nlifetime_seconds = 30\n'
    async with credential_stack(tmp_path, {"alpha": assertion}, clock=clock) as stack:
        jwks_url = f"{stack.base_url}/.well-known/jwks.json"
        source = stack.app.routes["alpha"].credentials
        request = _request("alpha", stack.upstreams["alpha"].url)
        with anyio.fail_after(20):
            old = {k["kid"] for k in (await stack.http.get(jwks_url)).json()["keys"]}
            (tmp_path / "key.new").write_bytes(pem())
            (tmp_path / "key.new").replace(tmp_path / "key.pem")
            await source.issue(request)  # signs with the new key: the old one is retired
            both = {k["kid"] for k in (await stack.http.get(jwks_url)).json()["keys"]}
            clock.now += 32
            after = {k["kid"] for k in (await stack.http.get(jwks_url)).json()["keys"]}
    assert len(old) == 1 and old < both and len(both) == 2
    assert after == both - old
