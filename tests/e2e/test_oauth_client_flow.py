"""The `mcp` SDK's own OAuth client against the gateway and the dev issuer, unmodified.

`ClientCredentialsOAuthProvider` is given the gateway URL and a client id and secret, nothing else: it
must find the issuer from the gateway's 401 (RFC 9728), ask it for a token bound to the route (RFC 8707),
and step up on a 403 `insufficient_scope` by itself (MCP 2026-07-28, SEP-2350: the union of what it had and
what the challenge names). Every hop is observed: the client's requests and the gateway's answers (httpx
event hooks), the issuer's token requests, what the upstream received, and the audit log.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthToken
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from tests._servers import refused_url
from tests._stack import Stack, gateway_stack
from tests.e2e._auth_support import (
    MemoryTokenStorage,
    RequestLog,
    audit_rows,
    parse_challenge,
    recorded_issuer,
    unverified_claims,
)

pytestmark = pytest.mark.anyio

MODES = ("legacy", "2026-07-28")

# A client with no token is challenged for `tools:read` (default_scopes); `delete_everything` needs `admin`.
ALLOWLIST = f"""
default_scopes = ["tools:read"]

[servers.everything.tool_scopes]
echo = ["tools:read"]
delete_everything = ["admin"]

[servers.other]
url = "{refused_url()}/mcp"
default_scopes = ["tools:read"]
"""


@dataclass
class World:
    stack: Stack
    issuer_log: RequestLog


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    with recorded_issuer() as issuer_log:
        async with gateway_stack(tmp_path_factory.mktemp("oauth"), allowlist=ALLOWLIST) as stack:
            yield World(stack, issuer_log)


@dataclass
class Wire:
    """What the SDK's HTTP client sent and what came back: (method, url, status, WWW-Authenticate)."""

    hops: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        self.hops.append(
            (request.method, str(request.url), response.status_code, response.headers.get("www-authenticate"))
        )

    def gateway_mcp(self, stack: Stack) -> list[tuple[str, str, int, str | None]]:
        return [hop for hop in self.hops if hop[1] == stack.mcp_url()]


def _provider(stack: Stack, storage: MemoryTokenStorage, *, issuer: str | None) -> ClientCredentialsOAuthProvider:
    if issuer is not None:
        return ClientCredentialsOAuthProvider(stack.mcp_url(), storage, "agent-a", stack.client_secret, issuer=issuer)
    # Gateway URL, client id and secret only: the issuer is learnt from the gateway. (The SDK warns that
    # omitting `issuer` is deprecated in favour of pinning it; learning it is what this client shows.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return ClientCredentialsOAuthProvider(stack.mcp_url(), storage, "agent-a", stack.client_secret)


@asynccontextmanager
async def sdk_client(
    stack: Stack, mode: str, storage: MemoryTokenStorage, wire: Wire, *, issuer: str | None = None
) -> AsyncIterator[Client]:
    """The SDK's client exactly as its docs wire it: an httpx2 client whose `auth` is the OAuth provider."""
    provider = _provider(stack, storage, issuer=issuer)
    hooks = {"response": [wire.on_response]}
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30, event_hooks=hooks) as http,
        Client(streamable_http_client(stack.mcp_url(), http_client=http), mode=mode) as client,
    ):
        yield client


def _text(result: Any) -> str:
    assert not result.is_error, result
    return str(result.content[0].text)


def _deletes(stack: Stack) -> int:
    return sum(1 for call in stack.tap.calls("tools/call") if call["params"]["name"] == "delete_everything")


async def test_sdk_client_with_only_the_gateway_url_and_client_credentials_discovers_the_issuer_and_calls_tools(
    world: World,
) -> None:
    stack = world.stack
    metadata_url = stack.config.resource_metadata_url("everything")
    issuer = stack.issuer.issuer
    for mode in MODES:
        storage, wire = MemoryTokenStorage(), Wire()
        token_requests_before = len(world.issuer_log.forms("/token"))
        with anyio.fail_after(30):
            async with sdk_client(stack, mode, storage, wire) as client:
                tools = await client.list_tools()
                echoed = await client.call_tool("echo", {"message": f"hello over {mode}"})
        assert "echo" in {tool.name for tool in tools.tools}, mode
        assert _text(echoed) == f"hello over {mode}"

        # The discovery path, hop by hop: 401 → RFC 9728 metadata → RFC 8414 metadata → token → retry.
        first = wire.hops[:5]
        assert [(method, url, status) for method, url, status, _ in first] == [
            ("POST", stack.mcp_url(), 401),
            ("GET", metadata_url, 200),
            ("GET", f"{issuer}/.well-known/oauth-authorization-server", 200),
            ("POST", f"{issuer}/token", 200),
            ("POST", stack.mcp_url(), 200),
        ], f"{mode}: {wire.hops}"
        scheme, challenge = parse_challenge(first[0][3])
        assert (scheme, challenge) == ("Bearer", {"resource_metadata": metadata_url, "scope": "tools:read"}), mode
        # No step-up was needed: one token for the whole session, asked for with this route as resource.
        forms = world.issuer_log.forms("/token")[token_requests_before:]
        assert len(forms) == 1, f"{mode}: {forms}"
        assert forms[0]["grant_type"] == "client_credentials"
        assert forms[0]["resource"] == stack.mcp_url(), "RFC 8707 resource is not the route's URI"
        assert forms[0]["scope"] == "tools:read"
        assert all(status < 400 for _, _, status, _ in wire.hops[1:]), wire.hops
        claims = unverified_claims(storage.tokens.access_token)
        assert claims["aud"] == stack.mcp_url() and claims["iss"] == issuer and claims["client_id"] == "agent-a"
    # The token was for the gateway; the upstream never sees it (MCP: token passthrough is forbidden).
    assert stack.tap.requests and all("authorization" not in headers for _, headers, _ in stack.tap.requests)


async def test_sdk_client_steps_up_on_403_and_the_call_is_forwarded_once_with_both_attempts_audited(
    world: World,
) -> None:
    stack = world.stack
    metadata_url = stack.config.resource_metadata_url("everything")
    for mode in MODES:
        storage, wire = MemoryTokenStorage(), Wire()
        token_requests_before = len(world.issuer_log.forms("/token"))
        audited_before = len(await _delete_rows(stack))
        with anyio.fail_after(30):
            async with sdk_client(stack, mode, storage, wire, issuer=stack.issuer.issuer) as client:
                assert _text(await client.call_tool("echo", {"message": "before"})) == "before"
                first_token = storage.tokens.access_token
                assert unverified_claims(first_token)["scope"] == "tools:read", "the client does not hold tools:read"
                deletes_before = _deletes(stack)
                deleted = await client.call_tool("delete_everything", {"why": mode})
                second_token = storage.tokens.access_token
                # The wider token keeps the earlier grant: the session goes on with it.
                after = await client.call_tool("echo", {"message": "after"})
        assert _text(deleted) == "nothing deleted"
        assert _text(after) == "after"
        assert _deletes(stack) - deletes_before == 1, (
            f"{mode}: delete_everything forwarded {_deletes(stack) - deletes_before} times"
        )

        # The 403 named exactly the missing scope; the provider asked for the union and retried once.
        refusals = [hop for hop in wire.gateway_mcp(stack) if hop[2] == 403]
        assert len(refusals) == 1, f"{mode}: {wire.hops}"
        assert parse_challenge(refusals[0][3]) == (
            "Bearer",
            {
                "error": "insufficient_scope",
                "error_description": parse_challenge(refusals[0][3])[1].get("error_description", ""),
                "scope": "admin",
                "resource_metadata": metadata_url,
            },
        )
        forms = world.issuer_log.forms("/token")[token_requests_before:]
        assert [form["scope"] for form in forms] == ["tools:read", "tools:read admin"], f"{mode}: {forms}"
        assert {form["resource"] for form in forms} == {stack.mcp_url()}
        second_claims = unverified_claims(second_token)
        assert set(second_claims["scope"].split(" ")) == {"tools:read", "admin"}

        # Both attempts are in the audit log, correlated by agent, tool and arguments; the token ids differ.
        rows = (await _delete_rows(stack))[audited_before:]
        assert len(rows) == 2, f"{mode}: {rows}"
        refused, allowed = rows
        assert (refused["decision"], refused["http_status"]) == ("step_up", 403), refused
        assert (refused["scope_granted"], refused["scopes_required"]) == (["tools:read"], ["admin"]), refused
        assert refused["token_id"] == unverified_claims(first_token)["jti"]
        assert (allowed["decision"], allowed["outcome"], allowed["http_status"]) == ("allow", "ok", 200), allowed
        assert (allowed["scope_granted"], allowed["scopes_required"]) == (["admin", "tools:read"], ["admin"])
        assert allowed["token_id"] == second_claims["jti"]
        assert refused["policy_rule"] == allowed["policy_rule"] == "tool_scopes.delete_everything"
        assert refused["arguments_sha256"] == allowed["arguments_sha256"] is not None
        assert refused["delegating_user"] == allowed["delegating_user"] == "user-of-agent-a"
        if mode == "legacy":
            assert refused["session_id"] and refused["session_id"] == allowed["session_id"], "not one session"


async def _delete_rows(stack: Stack) -> list[dict[str, Any]]:
    return [row for row in await audit_rows(stack) if row["tool"] == "delete_everything"]


def _mcp_errors(exc: BaseException) -> list[MCPError]:
    if isinstance(exc, MCPError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [found for inner in exc.exceptions for found in _mcp_errors(inner)]
    return _mcp_errors(exc.__cause__) if exc.__cause__ is not None else []


async def test_a_token_for_another_route_or_audience_does_not_work(world: World) -> None:
    stack = world.stack
    audiences = {
        "another route of this gateway": stack.mcp_url("other"),
        "the bare origin": stack.base_url,
        "the upstream itself": stack.upstream_url,
        "another service": "https://api.example.com/mcp",
    }
    before = len(stack.tap.requests)
    for label, audience in audiences.items():
        token = stack.token(["tools:read", "admin"], resource=audience)
        for mode in MODES:
            with pytest.raises(BaseException) as raised:  # the SDK wraps its MCPError in task groups
                with anyio.fail_after(20):
                    async with stack.client(token, mode=mode) as client:
                        await client.list_tools()
            errors = _mcp_errors(raised.value)
            assert errors, f"{label}/{mode}: not refused by the gateway: {raised.value!r}"
            assert "not intended for this resource" in str(errors[0]), f"{label}/{mode}: {errors[0]}"
    assert len(stack.tap.requests) == before, "a wrong-audience token reached the upstream"


async def test_sdk_client_holding_a_token_for_another_route_is_refused_and_fetches_the_right_one(
    world: World,
) -> None:
    stack = world.stack
    wrong = stack.token(["tools:read"], resource=stack.mcp_url("other"))
    storage = MemoryTokenStorage(
        OAuthToken(access_token=wrong, token_type="Bearer", expires_in=300, scope="tools:read")
    )
    wire = Wire()
    before = len(stack.tap.requests)
    with anyio.fail_after(30):
        async with sdk_client(stack, "2026-07-28", storage, wire, issuer=stack.issuer.issuer) as client:
            result = await client.call_tool("echo", {"message": "recovered"})
    assert _text(result) == "recovered"
    first = wire.gateway_mcp(stack)[0]
    assert first[2] == 401
    assert parse_challenge(first[3])[1]["error"] == "invalid_token"
    assert unverified_claims(storage.tokens.access_token)["aud"] == stack.mcp_url()
    # Only requests made with the right token reached the upstream.
    assert len(stack.tap.calls("tools/call")) >= 1
    assert len(stack.tap.requests) - before == len([hop for hop in wire.gateway_mcp(stack) if hop[2] < 400])
