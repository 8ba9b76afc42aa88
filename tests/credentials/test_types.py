"""Every credential type against real loopback servers: what the upstream receives, and where no secret goes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcp_gateway.audit.sqlite import SQLiteAuditReader
from tests.credentials._support import (
    AGENT,
    GATEWAY_CLIENT,
    GATEWAY_SECRET,
    ROTATED_TOKEN,
    STATIC_TOKEN,
    USER,
    CredentialStack,
    credential_stack,
)

pytestmark = pytest.mark.anyio

SECRETS = {"ALPHA_TOKEN": STATIC_TOKEN, "GW_SECRET": GATEWAY_SECRET}
TYPES = {
    "bearer": 'type = "bearer"\ntoken_env = "ALPHA_TOKEN"\n',
    "token_file": 'type = "bearer"\ntoken_file = "alpha.token"\n',
    "oauth_client_credentials": (
        f'type = "oauth_client_credentials"\nclient_id = "{GATEWAY_CLIENT}"\nclient_secret_env = "GW_SECRET"\n'
        'scope = ["tools:read"]\n'
    ),
    "token_exchange": (
        f'type = "token_exchange"\nclient_id = "{GATEWAY_CLIENT}"\nclient_secret_file = "gw.secret"\n'
        'auth_method = "client_secret_post"\nscope = "operation"\n'
    ),
    "signed_assertion": 'type = "signed_assertion"\nprivate_key_file = "gateway-key.pem"\n',
}


def _write_files(directory: Path) -> str:
    (directory / "alpha.token").write_text(STATIC_TOKEN + "\n")
    (directory / "gw.secret").write_text(GATEWAY_SECRET + "\n")
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / "gateway-key.pem").write_bytes(pem)
    return pem.decode()


async def _leaks(stack: CredentialStack, caplog: pytest.LogCaptureFixture, canaries: list[str]) -> dict[str, list[str]]:
    """Where each canary appears: log lines, responses, audit rows, metrics (empty lists everywhere: no leak)."""
    await stack.app.audit.flush()
    rows = json.dumps(list(SQLiteAuditReader(stack.directory / "audit.db").query()))
    metrics = (await stack.http.get(f"{stack.base_url}/metrics")).text
    readyz = (await stack.http.get(f"{stack.base_url}/readyz")).text
    places = {"logs": caplog.text, "responses": "\n".join(stack.bodies), "audit": rows, "metrics": metrics}
    places["readyz"] = readyz
    places["config repr"] = repr(stack.config)
    return {canary: [where for where, text in places.items() if canary in text] for canary in canaries}


@pytest.mark.parametrize("kind", list(TYPES))
async def test_each_type_sends_exactly_its_credential_and_leaks_no_secret(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pem = _write_files(tmp_path)
    async with credential_stack(tmp_path, {"alpha": TYPES[kind]}, secrets=SECRETS) as stack:
        token = stack.token()
        with anyio.fail_after(30):
            me = await stack.whoami("alpha", token)
            echoed = await stack.call("alpha", "show_request_headers", token)
        assert echoed.status_code == 200, echoed.text
        received = stack.upstreams["alpha"].tap.requests
        assert received and all(token not in json.dumps(headers) for _, headers, _ in received)
        sent = received[-1][1]
        canaries = [STATIC_TOKEN, GATEWAY_SECRET, pem.splitlines()[1]]
        if kind in ("bearer", "token_file"):
            assert sent["authorization"] == f"Bearer {STATIC_TOKEN}"
            assert me["client_id"] == "static-client"
        else:
            upstream_token = sent["authorization"].removeprefix("Bearer ")
            canaries.append(upstream_token)
            claims = jwt.decode(upstream_token, options={"verify_signature": False})
            assert claims["aud"] == stack.upstreams["alpha"].url
            if kind == "oauth_client_credentials":
                assert me["sub"] == GATEWAY_CLIENT and me["scopes"] == ["tools:read"] and me["act"] is None
            else:
                # Delegation the upstream can see: the user as sub, the agent in act, this upstream as aud,
                # exactly the scopes the operation needed (whoami and show_request_headers: tools:read).
                assert me["sub"] == USER and me["act"] == {"sub": AGENT} and me["scopes"] == ["tools:read"]
                assert me["aud"] == stack.upstreams["alpha"].url
            if kind == "signed_assertion":
                assert me["iss"] == stack.base_url and claims["exp"] - claims["iat"] <= 60 and claims["jti"]
        # The upstream echoed the credential (show_request_headers): the client sees it redacted.
        assert "[REDACTED]" in echoed.text
        leaks = await _leaks(stack, caplog, canaries)
        rows = list(SQLiteAuditReader(stack.directory / "audit.db").query())
    assert leaks == {canary: [] for canary in canaries}
    recorded = [json.loads(row["upstream_credential"]) for row in rows if row.get("upstream_credential")]
    assert recorded and {r["type"] for r in recorded} == {"bearer" if kind == "token_file" else kind}
    assert all(r["token_id"] for r in recorded)


async def test_a_token_exchanged_for_one_upstream_is_refused_by_another(tmp_path: Path) -> None:
    _write_files(tmp_path)
    both = {"alpha": TYPES["token_exchange"], "beta": TYPES["token_exchange"]}
    async with credential_stack(tmp_path, both, secrets=SECRETS) as stack:
        with anyio.fail_after(30):
            assert (await stack.whoami("alpha", stack.token()))["aud"] == stack.upstreams["alpha"].url
            exchanged = stack.received_authorization("alpha")[-1]
            direct = await stack.http.post(
                stack.upstreams["beta"].url,
                headers={"authorization": exchanged, "content-type": "application/json", "accept": "application/json"},
                content=b"{}",
            )
            assert direct.status_code == 401
            # The gateway's own exchange for beta names beta.
            assert (await stack.whoami("beta", stack.token(server="beta")))["aud"] == stack.upstreams["beta"].url


async def test_replacing_the_token_file_changes_what_the_next_call_sends(tmp_path: Path) -> None:
    _write_files(tmp_path)
    async with credential_stack(tmp_path, {"alpha": TYPES["token_file"]}) as stack:
        token = stack.token()
        with anyio.fail_after(30):
            await stack.whoami("alpha", token)
            replacement = tmp_path / "alpha.token.new"
            replacement.write_text(ROTATED_TOKEN + "\n")
            replacement.replace(tmp_path / "alpha.token")  # an atomic rotation, as a secret manager does it
            echoed = await stack.call("alpha", "show_request_headers", token)
        assert stack.received_authorization("alpha")[-2:] == [f"Bearer {STATIC_TOKEN}", f"Bearer {ROTATED_TOKEN}"]
        # Both the new and the replaced value are redacted from what the upstream sends back.
        assert ROTATED_TOKEN not in echoed.text and "[REDACTED]" in echoed.text
        route = stack.app.routes["alpha"]
        assert {STATIC_TOKEN.encode(), ROTATED_TOKEN.encode()} <= set(route.credentials.secrets)
