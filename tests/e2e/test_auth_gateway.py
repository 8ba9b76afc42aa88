"""The gateway as an OAuth resource server, end to end: every hostile token of SECURITY.md's "How the token
arrives", "Signature, algorithm, key" and "Claims" sections, sent to a real stack over real sockets.

Each case asserts the status, the exact `WWW-Authenticate` parameters, that the upstream received nothing,
and that no part of the token comes back. Tokens are signed with real keys: the dev issuer's own key for
"valid signature, wrong claim" cases, attacker keys (RSA, EC, Ed25519) for the rest. Each table runs in one
stack and reports every failing case at once, by its id.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives import serialization

from tests._jws import b64url, compact, hmac_token, jws, signed_raw
from tests._mcp import HANDSHAKE, initialize_body, modern_headers, open_session, post_headers
from tests._servers import refused_url
from tests._stack import DEFAULT_ALLOWLIST, Stack, gateway_stack
from tests.auth._support import HOSTILE_IDENTITY_VALUES
from tests.e2e._auth_support import (
    AttackerKeys,
    RequestLog,
    assert_challenge,
    assert_no_token_leak,
    audit_rows,
    bait_server,
    claims_for,
    issuer_signed,
    jsonrpc_answer,
    public_pem,
    recorded_issuer,
    token_fragments,
    tool_call,
)

pytestmark = pytest.mark.anyio

# A second route on the same gateway whose upstream must never be contacted by these tests.
OTHER_ROUTE = 'default_scopes = ["tools:call"]'
ECHO_SCOPE = "tools:read"  # tool_scopes.echo in DEFAULT_ALLOWLIST: what a 401 for an echo call names


@dataclass
class World:
    stack: Stack
    http: httpx2.AsyncClient
    issuer_log: RequestLog
    bait_url: str
    bait_log: RequestLog
    attacker: AttackerKeys
    presented: list[str] = field(default_factory=list)  # every token sent, for the audit leak check

    @property
    def url(self) -> str:
        return self.stack.mcp_url()

    @property
    def metadata_url(self) -> str:
        return self.stack.config.resource_metadata_url("everything")

    @property
    def jwks_fetches(self) -> int:
        return self.issuer_log.count("/jwks.json")


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    attacker = AttackerKeys.generate()
    bait_documents = {
        "/jwks.json": json.dumps({"keys": [attacker.ec256_jwk("attacker-1")]}).encode(),
        "/cert.pem": public_pem(attacker.ec256),
    }
    allowlist = f'{DEFAULT_ALLOWLIST}\n[servers.other]\nurl = "{refused_url()}/mcp"\n{OTHER_ROUTE}\n'
    async with bait_server(bait_documents) as (bait_url, bait_log):
        with recorded_issuer() as issuer_log:
            async with (
                gateway_stack(tmp_path_factory.mktemp("auth"), allowlist=allowlist) as stack,
                httpx2.AsyncClient(timeout=20) as http,
            ):
                yield World(stack, http, issuer_log, bait_url, bait_log, attacker)


# --- the table runner --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    token: str | None  # what the case presents (checked for leaks); None when it presents nothing
    status: int
    error: str | None = None
    scope: str | None = ECHO_SCOPE
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None  # replaces the default headers
    body: Mapping[str, Any] | None = None  # default: a 2026-07-28 tools/call of echo
    query: str = ""
    route: str = "everything"
    tool: str = "echo"


def _invalid(case_id: str, token: str, **kwargs: Any) -> Case:
    """401i: error="invalid_token" with resource_metadata (and the operation's scope)."""
    return Case(case_id, token, 401, "invalid_token", **kwargs)


def _accepted(case_id: str, token: str, **kwargs: Any) -> Case:
    """A positive control: the same builders produce a token the gateway accepts and forwards once."""
    return Case(case_id, token, 200, None, **kwargs)


async def _run(world: World, case: Case) -> None:
    stack = world.stack
    body = case.body if case.body is not None else tool_call(case.tool, {"message": "hi"})
    if case.headers is not None:
        headers: Any = case.headers
    else:
        headers = modern_headers(case.token, "tools/call", case.tool)
    if case.token is not None:
        world.presented.append(case.token)
    before = len(stack.tap.requests)
    fetches_before = world.jwks_fetches
    url = stack.mcp_url(case.route) + case.query
    with anyio.fail_after(15):
        response = await world.http.post(url, json=body, headers=headers)
    metadata_url = stack.config.resource_metadata_url(case.route)
    if case.status == 200:
        assert response.status_code == 200, f"status {response.status_code}: {response.text[:300]}"
        answer = jsonrpc_answer(response)
        assert "result" in answer and not answer["result"].get("isError"), f"not a tool result: {answer}"
        forwarded = stack.tap.requests[before:]
        assert len(forwarded) == 1, f"forwarded {len(forwarded)} requests, expected exactly one"
        assert "authorization" not in forwarded[0][1], "the client's token was passed upstream"
        return
    assert_challenge(response, status=case.status, error=case.error, scope=case.scope, resource_metadata=metadata_url)
    forwarded = stack.tap.requests[before:]
    assert not forwarded, f"the upstream received {[(m, b[:80]) for m, _, b in forwarded]}"
    answer = response.json()
    assert answer.get("jsonrpc") == "2.0" and isinstance(answer.get("error"), dict), response.text[:300]
    assert answer.get("id") == body.get("id"), f"JSON-RPC id {answer.get('id')!r}"
    if case.token is not None:
        assert_no_token_leak(response, case.token, case.id)
    # Only an unknown kid may cause a key-set fetch, and the cool-down covers the first seconds after start.
    assert world.jwks_fetches == fetches_before, "a refused token made the gateway fetch the JWKS"
    assert world.bait_log.count() == 0, f"the gateway contacted a URL named in a token: {world.bait_log.requests}"


async def _run_table(world: World, cases: list[Case]) -> None:
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    failures: list[str] = []
    for case in cases:
        try:
            await _run(world, case)
        except AssertionError as exc:
            failures.append(f"{case.id}: {exc}")
    if failures:
        pytest.fail(f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures), pytrace=False)


# --- How the token arrives ---------------------------------------------------------------------------


async def test_every_way_a_token_can_arrive_other_than_one_bearer_header_is_refused(world: World) -> None:
    stack = world.stack
    good = stack.token([ECHO_SCOPE])

    def with_auth(value: str) -> dict[str, str]:
        return {**modern_headers(None, "tools/call", "echo"), "authorization": value}

    oversized = issuer_signed(stack, claims_for(stack, padding="x" * 9000))
    cases = [
        _accepted("one Authorization: Bearer header (control)", good),
        _accepted("scheme is case-insensitive: 'bearer' (control)", good, headers=with_auth(f"bearer {good}")),
        # RFC 6750 §3.1: no credentials, or an unsupported scheme → challenge without an error code.
        Case("no Authorization header", None, 401, None),
        Case(
            "no Authorization header on initialize names default_scopes",
            None,
            401,
            None,
            scope="tools:call",
            body=initialize_body(),
            headers=post_headers(None),
        ),
        Case(
            "token only in the query string",
            good,
            401,
            None,
            query=f"?access_token={good}",
            headers=modern_headers(None, "tools/call", "echo"),
        ),
        Case(
            "token only in a cookie",
            good,
            401,
            None,
            headers={**modern_headers(None, "tools/call", "echo"), "cookie": f"access_token={good}"},
        ),
        Case(
            "token only in a body field",
            good,
            401,
            None,
            body={**tool_call("echo", {"message": "hi"}), "access_token": good},
            headers=modern_headers(None, "tools/call", "echo"),
        ),
        Case("Basic credentials", None, 401, None, headers=with_auth("Basic YWdlbnQtYTpzZWNyZXQ=")),
        Case("an unsupported scheme carrying a valid token", good, 401, None, headers=with_auth(f"DPoP {good}")),
        # RFC 6750 §3.1 invalid_request: the request itself is malformed.
        Case("Bearer with nothing after it", None, 400, "invalid_request", headers=with_auth("Bearer")),
        Case("Bearer with an empty auth-param list", None, 400, "invalid_request", headers=with_auth("Bearer ,")),
        Case("characters outside b64token", None, 400, "invalid_request", headers=with_auth("Bearer ***.%%%.$$$")),
        Case("two tokens in one header", good, 400, "invalid_request", headers=with_auth(f"Bearer {good} {good}")),
        Case(
            "two Authorization headers",
            good,
            400,
            "invalid_request",
            headers=[
                *modern_headers(None, "tools/call", "echo").items(),
                ("authorization", f"Bearer {good}"),
                ("authorization", f"Bearer {good}"),
            ],
        ),
        # Shaped like a bearer credential but not a JWS: a verdict on the token (401i).
        _invalid("no dots at all", "Zm9vYmFyYmF6cXV4cXV1eA"),
        _invalid("one dot (two segments)", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0"),
        _invalid("four segments", f"{good}.{good.split('.')[2]}"),
        _invalid("standard base64 with + and / instead of base64url", good.replace("-", "+").replace("_", "/") + "+/"),
        Case(
            "'=' inside the credential (not b64token syntax)",
            good,
            400,
            "invalid_request",
            headers=with_auth("Bearer " + ".".join(part + "==" for part in good.split("."))),
        ),
        _invalid("padded signature segment", good + "=="),
        _invalid("header segment is not JSON", f"{b64url(b'not json at all')}.{good.split('.', 1)[1]}"),
        _invalid("impossible base64 length", "AAAAA.BBBBB.CCCCC"),
        _invalid("oversized token (issuer-signed, over max_token_bytes)", oversized),
    ]
    assert len(oversized) > stack.config.auth.max_token_bytes  # type: ignore[union-attr]
    await _run_table(world, cases)


async def test_oversized_headers_are_refused_with_431_before_the_token_is_looked_at(world: World) -> None:
    stack = world.stack
    # A token the gateway would otherwise answer 401i: 431 proves the size check ran first.
    token = jws(world.attacker.ec256, "ES256", {"kid": "attacker-1"}, claims_for(stack))
    headers = {**modern_headers(token, "tools/call", "echo"), "x-padding": "a" * 200_000}
    before = len(stack.tap.requests)
    with anyio.fail_after(15):
        response = await world.http.post(stack.mcp_url(), json=tool_call("echo", {"message": "hi"}), headers=headers)
    assert len(stack.tap.requests) == before
    assert response.status_code == 431, f"status {response.status_code}: {response.text[:200]}"


async def test_a_session_id_never_authenticates_and_never_crosses_principals(world: World) -> None:
    stack, http = world.stack, world.http
    token_a = stack.token([ECHO_SCOPE], client="agent-a")
    token_b = stack.token([ECHO_SCOPE], client="agent-b")
    world.presented += [token_a, token_b]
    with anyio.fail_after(15):
        session = await open_session(http, stack.mcp_url(), token_a)
        body = tool_call("echo", {"message": "hi"}, modern=False)
        before = len(stack.tap.requests)
        no_token = await http.post(
            stack.mcp_url(), json=body, headers=post_headers(None, version=HANDSHAKE, session=session)
        )
        assert_challenge(
            no_token,
            status=401,
            error=None,
            scope=ECHO_SCOPE,
            resource_metadata=world.metadata_url,
            case="valid session id, no token",
        )
        bad_token = await http.post(
            stack.mcp_url(), json=body, headers=post_headers(token_a[:-4] + "AAAA", version=HANDSHAKE, session=session)
        )
        assert_challenge(
            bad_token,
            status=401,
            error="invalid_token",
            scope=ECHO_SCOPE,
            resource_metadata=world.metadata_url,
            case="valid session id, forged token",
        )
        foreign = await http.post(
            stack.mcp_url(), json=body, headers=post_headers(token_b, version=HANDSHAKE, session=session)
        )
        assert foreign.status_code == 404, f"another principal's token on A's session: {foreign.status_code}"
        assert not stack.tap.requests[before:], "a refused request reached the upstream"
        # Control: the session's own principal is served.
        own = await http.post(
            stack.mcp_url(), json=body, headers=post_headers(token_a, version=HANDSHAKE, session=session)
        )
    assert own.status_code == 200, own.text[:300]
    assert [call["params"]["name"] for call in stack.tap.calls("tools/call")[-1:]] == ["echo"]
    assert len(stack.tap.requests) == before + 1


# --- Signature, algorithm, key -----------------------------------------------------------------------


async def test_every_forged_signature_algorithm_or_key_is_refused_with_401i(world: World) -> None:
    stack, attacker = world.stack, world.attacker
    key = stack.issuer.key
    claims = claims_for(stack)
    good = issuer_signed(stack, claims)
    issuer_pem = public_pem(key.private_key)
    issuer_der = key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    issuer_jwk = json.dumps(dict(key.public_jwk)).encode()
    kid = {"kid": key.kid, "typ": "at+jwt"}
    header_b64, payload_b64, signature_b64 = good.split(".")
    escalated = b64url(json.dumps({**claims, "scope": "admin tools:read tools:call"}).encode())
    other_signature = issuer_signed(stack, claims_for(stack)).split(".")[2]
    bait = world.bait_url
    x5c = b64url(attacker.ec256_certificate_der()).replace("-", "+").replace("_", "/")  # x5c is plain base64

    cases = [
        _accepted("issuer-signed token (control)", good),
        # alg none, in every capitalisation, with and without a signature.
        *[
            _invalid(f"alg {alg!r} unsigned", compact({"alg": alg, **kid}, claims))
            for alg in ("none", "None", "NONE", "nOnE")
        ],
        _invalid(
            "alg none carrying the issuer's real signature", compact({"alg": "none", **kid}, claims) + signature_b64
        ),
        # Algorithm confusion (CVE-2022-29217 and cousins): HMAC keyed with the issuer's public key.
        _invalid("HS256 MACed with the issuer's PEM public key", hmac_token(issuer_pem, "HS256", kid, claims)),
        _invalid("HS256 MACed with the issuer's DER public key", hmac_token(issuer_der, "HS256", kid, claims)),
        _invalid("HS256 MACed with the issuer's JWK JSON", hmac_token(issuer_jwk, "HS256", kid, claims)),
        _invalid("HS384 MACed with the issuer's PEM public key", hmac_token(issuer_pem, "HS384", kid, claims)),
        _invalid("HS512 MACed with the issuer's PEM public key", hmac_token(issuer_pem, "HS512", kid, claims)),
        # Keys that are not the issuer's, claiming the issuer's kid.
        _invalid("RS256 by an attacker RSA key", jws(attacker.rsa, "RS256", kid, claims)),
        _invalid("PS256 by an attacker RSA key", jws(attacker.rsa, "PS256", kid, claims)),
        _invalid("ES256 by an attacker P-256 key", jws(attacker.ec256, "ES256", kid, claims)),
        _invalid("ES256 by an attacker P-256 key, no kid", jws(attacker.ec256, "ES256", {"typ": "at+jwt"}, claims)),
        _invalid("ES384 by an attacker P-384 key", jws(attacker.ec384, "ES384", kid, claims)),
        _invalid("EdDSA by an attacker Ed25519 key", jws(attacker.ed25519, "EdDSA", kid, claims)),
        _invalid(
            "ES256 with an all-zero signature (CVE-2022-21449)", compact({"alg": "ES256", **kid}, claims, bytes(64))
        ),
        # The issuer's signature, used on something else.
        _invalid("payload escalated under the original signature", f"{header_b64}.{escalated}.{signature_b64}"),
        _invalid("signature taken from another token", f"{header_b64}.{payload_b64}.{other_signature}"),
        _invalid("signature removed", f"{header_b64}.{payload_b64}."),
        _invalid("signature truncated", f"{header_b64}.{payload_b64}.{signature_b64[:-8]}"),
        # Header fields pointing at key material elsewhere: never fetched, never trusted.
        _invalid(
            "jku at an attacker JWKS",
            jws(attacker.ec256, "ES256", {"kid": "attacker-1", "jku": f"{bait}/jwks.json"}, claims),
        ),
        _invalid(
            "x5u at an attacker certificate",
            jws(attacker.ec256, "ES256", {"kid": "attacker-1", "x5u": f"{bait}/cert.pem"}, claims),
        ),
        _invalid("x5c with an attacker certificate", jws(attacker.ec256, "ES256", {"x5c": [x5c]}, claims)),
        _invalid(
            "embedded jwk of an attacker key",
            jws(attacker.ec256, "ES256", {"jwk": attacker.ec256_jwk("attacker-1")}, claims),
        ),
        _invalid(
            "jku on an otherwise valid issuer-signed token", issuer_signed(stack, claims, jku=f"{bait}/jwks.json")
        ),
        _invalid("x5u on an otherwise valid issuer-signed token", issuer_signed(stack, claims, x5u=f"{bait}/cert.pem")),
        # RFC 8725 §3.11: a JWT of another type is never an access token, however well signed.
        _invalid("typ dpop+jwt (a DPoP proof)", issuer_signed(stack, claims, typ="dpop+jwt")),
        _invalid("typ logout+jwt", issuer_signed(stack, claims, typ="logout+jwt")),
        # RFC 7515 §4.1.11: critical extensions we do not understand.
        _invalid("crit naming exp", issuer_signed(stack, claims, crit=["exp"])),
        _invalid("crit b64 false (RFC 7797)", issuer_signed(stack, claims, crit=["b64"], b64=False)),
        _invalid("empty crit list", issuer_signed(stack, claims, crit=[])),
        # A JWE instead of a JWS: five segments, refused without decrypting or inflating anything.
        _invalid(
            "JWE compact (five segments, zip DEF)",
            ".".join(
                [
                    b64url(json.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF", **kid}).encode()),
                    b64url(b"k" * 256),
                    b64url(b"i" * 12),
                    b64url(b"c" * 64),
                    b64url(b"t" * 16),
                ]
            ),
        ),
        # Header shapes.
        _invalid("kid of the wrong type", issuer_signed(stack, claims, kid=12345)),
        _invalid("kid 300 characters long", issuer_signed(stack, claims, kid="k" * 300)),
        _invalid("kid with path traversal", issuer_signed(stack, claims, kid="../../../../dev/null")),
        _invalid("alg missing", compact(kid, claims, b"x" * 64)),
        _invalid(
            "duplicate alg members in the header",
            # Last-member-wins would read ES256 and accept the valid signature: only refusing duplicates stops it.
            signed_raw(key.private_key, "ES256", f'{{"alg":"none","kid":"{key.kid}","alg":"ES256"}}'.encode(), claims),
        ),
        _invalid("header is a JSON array", f"{b64url(b'[1,2]')}.{payload_b64}.{signature_b64}"),
    ]
    await _run_table(world, cases)
    assert world.bait_log.count() == 0
    # Control: the bait server does count what reaches it (then it is reset for the tests that follow).
    with anyio.fail_after(10):
        assert (await world.http.get(f"{bait}/jwks.json")).status_code == 200
    assert world.bait_log.count("/jwks.json") == 1
    world.bait_log.requests.clear()


async def test_a_flood_of_unknown_kids_costs_at_most_one_jwks_fetch(world: World) -> None:
    stack, attacker = world.stack, world.attacker
    tokens = [jws(attacker.ec256, "ES256", {"kid": f"unknown-{i}"}, claims_for(stack)) for i in range(40)]
    world.presented += tokens
    before, fetches_before = len(stack.tap.requests), world.jwks_fetches
    responses: list[httpx2.Response] = []

    async def send(token: str) -> None:
        headers = modern_headers(token, "tools/call", "echo")
        responses.append(
            await world.http.post(stack.mcp_url(), json=tool_call("echo", {"message": "x"}), headers=headers)
        )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(send, token)
    assert len(responses) == len(tokens)
    for response in responses:
        assert_challenge(
            response, status=401, error="invalid_token", scope=ECHO_SCOPE, resource_metadata=world.metadata_url
        )
    assert len(stack.tap.requests) == before
    assert world.jwks_fetches - fetches_before <= 1, f"{world.jwks_fetches - fetches_before} JWKS fetches"
    # Control: the gateway's own start-up fetch went through the recorder, so the count above is real.
    assert fetches_before >= 1, "the issuer recorder never saw the gateway's JWKS fetch"


# --- Claims ------------------------------------------------------------------------------------------


async def test_every_wrong_claim_under_a_valid_signature_is_refused(world: World) -> None:
    stack = world.stack
    now = int(time.time())
    mcp = stack.mcp_url()
    origin = stack.base_url
    issuer = stack.issuer.issuer

    def signed(**overrides: Any) -> str:
        return issuer_signed(stack, claims_for(stack, now=now, **overrides))

    def raw(payload: str) -> str:
        return issuer_signed(stack, payload.encode())

    members = json.dumps(claims_for(stack, now=now))[1:-1]  # to splice into hand-made payloads
    exp_member = f'"exp": {now + 300}'
    assert exp_member in members

    def exp_as(literal: str) -> str:
        return raw("{" + members.replace(exp_member, f'"exp": {literal}') + "}")

    cases = [
        _accepted("valid claims (control)", signed()),
        _accepted("aud array containing this route (control)", signed(aud=["https://api.example.com", mcp])),
        _accepted("token minted by the dev issuer (control)", stack.token([ECHO_SCOPE])),
        # aud (RFC 8707): exactly this route's resource URI.
        _invalid("aud: another route of this gateway", signed(aud=stack.mcp_url("other"))),
        _invalid("aud: dev-issuer token for another route", stack.token([ECHO_SCOPE], resource=stack.mcp_url("other"))),
        _invalid("aud: the bare origin", signed(aud=origin)),
        _invalid("aud: the origin with a slash", signed(aud=f"{origin}/")),
        _invalid("aud: another service", signed(aud="https://api.example.com/mcp")),
        _invalid("aud: the upstream's own URL", signed(aud=stack.upstream_url)),
        _invalid("aud: the authorization server", signed(aud=issuer)),
        _invalid("aud: route with a trailing slash", signed(aud=f"{mcp}/")),
        _invalid("aud: route with different case", signed(aud=mcp.replace("/everything/", "/Everything/"))),
        _invalid("aud: route as a prefix of the audience", signed(aud=f"{mcp}-evil")),
        _invalid("aud: route with a query", signed(aud=f"{mcp}?x=1")),
        _invalid("aud: localhost spelling of the route", signed(aud=mcp.replace("127.0.0.1", "localhost"))),
        _invalid("aud: array without this route", signed(aud=[origin, stack.mcp_url("other")])),
        _invalid("aud: missing", signed(aud=None)),
        _invalid("aud: a number", signed(aud=123)),
        _invalid("aud: an object", signed(aud={"url": mcp})),
        _invalid("aud: an empty array", signed(aud=[])),
        _invalid("aud: array holding a non-string", signed(aud=[mcp, 7])),
        # iss: exact string equality (CVE-2024-53861).
        _invalid("iss: with a suffix", signed(iss=f"{issuer}/tenant")),
        _invalid("iss: a prefix of the issuer", signed(iss=issuer[:-1])),
        _invalid("iss: with a trailing slash", signed(iss=f"{issuer}/")),
        _invalid("iss: https instead of http", signed(iss=issuer.replace("http://", "https://"))),
        _invalid("iss: upper-case scheme", signed(iss=issuer.replace("http://", "HTTP://"))),
        _invalid("iss: missing", signed(iss=None)),
        _invalid("iss: an array", signed(iss=[issuer])),
        # Time: exp required; exp, nbf, iat with 60 s leeway; lifetime at most max_token_lifetime_seconds.
        _invalid("exp: missing", signed(exp=None)),
        _invalid("exp: expired beyond the leeway", signed(exp=now - 120, iat=now - 400, nbf=now - 400)),
        _invalid("exp: expired an hour ago", signed(exp=now - 3600, iat=now - 3900, nbf=now - 3900)),
        _invalid("nbf: an hour from now", signed(nbf=now + 3600)),
        _invalid("iat: an hour from now", signed(iat=now + 3600, nbf=now)),
        _invalid("lifetime: two hours (max one)", signed(exp=now + 7200)),
        _invalid("lifetime: no iat and two hours left", signed(iat=None, exp=now + 7200)),
        _invalid("exp: a string", signed(exp=str(now + 300))),
        _invalid("exp: true", signed(exp=True)),
        _invalid("exp: an array", signed(exp=[now + 300])),
        _invalid("exp: 1e400 (infinite)", exp_as("1e400")),
        _invalid("exp: NaN", exp_as("NaN")),
        _invalid("exp: an integer beyond any float", signed(exp=10**400)),
        _invalid("exp: null", exp_as("null")),
        _invalid("nbf: a string", signed(nbf="now")),
        _invalid("iat: an object", signed(iat={"t": now})),
        # Identity and other claims of the wrong JSON type.
        _invalid("sub: a number", signed(sub=5)),
        _invalid("client_id: an array", signed(client_id=["agent-a"])),
        _invalid("azp: an object", signed(azp={"id": "agent-a"})),
        _invalid("jti: a number", signed(jti=7)),
        _invalid("scope: an array", signed(scope=["tools:read"])),
        _invalid("scope: a number", signed(scope=1)),
        _invalid("act: a string", signed(act="bob")),
        _invalid("act: sub of the wrong type", signed(act={"sub": 5})),
        _invalid("no client_id, azp or sub", signed(client_id=None, sub=None)),
        # RFC 7800 cnf: bound to a key whose proof the gateway does not check; never downgraded to bearer.
        _invalid("cnf (sender-constrained token)", signed(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})),
        _invalid("payload: a JSON array", issuer_signed(stack, [1, 2, 3])),
        _invalid("payload: a JSON string", issuer_signed(stack, "claims")),
        # Last-member-wins would accept this one (the right aud comes last): only refusing duplicates stops it.
        _invalid("payload: duplicate aud members", raw('{"aud":"https://api.example.com/mcp",' + members + "}")),
        _invalid("payload: not UTF-8", issuer_signed(stack, b'{"iss":"\xff\xfe"}')),
    ]
    await _run_table(world, cases)


async def test_identity_claims_with_control_characters_are_refused_with_401i_naming_the_claim(world: World) -> None:
    # SECURITY.md "identity claims with control characters are refused": these values would otherwise be
    # written into the audit as agent_id, delegating_user or token_id. Signed by the issuer's own key.
    stack = world.stack
    overrides: dict[str, Any] = {
        "sub": lambda value: {"sub": value},
        "client_id": lambda value: {"client_id": value},
        "jti": lambda value: {"jti": value},
        "act.sub": lambda value: {"act": {"sub": value}},
    }
    failures: list[str] = []
    for claim, override in overrides.items():
        for family, (value, defect) in HOSTILE_IDENTITY_VALUES.items():
            token = issuer_signed(stack, claims_for(stack, **override(value)))
            world.presented.append(token)
            before = len(stack.tap.requests)
            with anyio.fail_after(15):
                response = await world.http.post(
                    world.url,
                    json=tool_call("echo", {"message": "hi"}),
                    headers=modern_headers(token, "tools/call", "echo"),
                )
            case = f"{claim} {family}"
            try:
                params = assert_challenge(
                    response,
                    status=401,
                    error="invalid_token",
                    scope=ECHO_SCOPE,
                    resource_metadata=world.metadata_url,
                    case=case,
                )
                assert params.get("error_description") == f"the token's {claim} claim {defect}", case
                assert "alice" not in response.text and value not in response.text, case
                assert not stack.tap.requests[before:], f"[{case}] the upstream received a request"
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, f"{len(failures)} cases failed:\n" + "\n".join(failures)
    # A printable identity in any script is still accepted (control), and no hostile value reached the audit.
    with anyio.fail_after(15):
        accepted = await world.http.post(
            world.url,
            json=tool_call("echo", {"message": "hi"}),
            headers=modern_headers(issuer_signed(stack, claims_for(stack, sub="Jos\u00e9")), "tools/call", "echo"),
        )
    assert accepted.status_code == 200, accepted.text[:300]
    recorded = json.dumps(await audit_rows(stack), ensure_ascii=False)
    assert '"delegating_user": "Jos\u00e9"' in recorded
    assert not [family for family, (value, _) in HOSTILE_IDENTITY_VALUES.items() if value in recorded]


async def test_scope_tricks_get_403_insufficient_scope_and_are_audited_by_token_id(world: World) -> None:
    stack = world.stack
    admin = "admin"  # tool_scopes.delete_everything
    tricks = {
        "admin2": "admin2",
        "ADMIN": "ADMIN",
        "Admin": "Admin",
        "comma-joined": "tools:read,admin",
        "tab-joined": "tools:read\tadmin",
        "newline-joined": "tools:read\nadmin",
        "admin as a prefix": "administrator",
        "quoted": '"admin"',
    }
    jtis: dict[str, str] = {}
    cases: list[Case] = []
    for name, scope in tricks.items():
        claims = claims_for(stack, scope=scope)
        jtis[name] = claims["jti"]
        cases.append(
            Case(
                f"scope {name}: {scope!r}",
                issuer_signed(stack, claims),
                403,
                "insufficient_scope",
                scope=admin,
                tool="delete_everything",
            )
        )
    scp = claims_for(stack, scope=None, scp=["admin", "tools:read"])
    jtis["scp array (accept_scp_claim off)"] = scp["jti"]
    cases += [
        Case(
            "scp array (accept_scp_claim off)",
            issuer_signed(stack, scp),
            403,
            "insufficient_scope",
            scope=admin,
            tool="delete_everything",
        ),
        _accepted(
            "scope 'tools:read admin' (control)",
            issuer_signed(stack, claims_for(stack, scope="tools:read admin")),
            tool="delete_everything",
        ),
    ]
    await _run_table(world, cases)
    rows = await audit_rows(stack)
    by_token = {row["token_id"]: row for row in rows if row["tool"] == "delete_everything"}
    for name, jti in jtis.items():
        row = by_token.get(jti)
        assert row is not None, f"no audit record names the token of case {name!r} by its jti"
        assert (row["decision"], row["http_status"], row["scopes_required"]) == ("step_up", 403, [admin]), (name, row)


async def test_a_token_for_this_route_does_not_open_another_route(world: World) -> None:
    stack = world.stack
    everything_token = stack.token([ECHO_SCOPE, "tools:call"])
    cases = [
        # The other route's upstream is a port where nothing listens: reaching it would be a 502, not 401.
        _invalid("everything's token at /other/mcp", everything_token, route="other", scope="tools:call"),
        _invalid(
            "everything's signed claims at /other/mcp",
            issuer_signed(stack, claims_for(stack, scope="tools:call")),
            route="other",
            scope="tools:call",
        ),
        Case("no token at /other/mcp", None, 401, None, route="other", scope="tools:call"),
    ]
    await _run_table(world, cases)


# --- RFC 9728 metadata -------------------------------------------------------------------------------


async def test_protected_resource_metadata_names_this_route_its_issuer_and_every_scope_its_rules_name(
    world: World,
) -> None:
    stack, http = world.stack, world.http
    allowlist = tomllib.loads((stack.directory / "server_allowlist.toml").read_text())
    with anyio.fail_after(15):
        challenge = await http.post(
            stack.mcp_url(), json=tool_call("echo"), headers=modern_headers(None, "tools/call", "echo")
        )
        metadata_url = challenge.headers["www-authenticate"].split('resource_metadata="')[1].split('"')[0]
        documents = {name: await http.get(stack.config.resource_metadata_url(name)) for name in ("everything", "other")}
        spoofed = await http.get(
            metadata_url,
            headers={
                "host": f"localhost:{stack.config.port}",
                "x-forwarded-host": "evil.example",
                "x-forwarded-proto": "https",
                "forwarded": "host=evil.example;proto=https",
            },
        )
        misdirected = await http.get(metadata_url, headers={"host": "evil.example"})
        unknown = await http.get(stack.config.resource_metadata_url("nonexistent"))
    assert metadata_url == stack.config.resource_metadata_url("everything")
    assert metadata_url == f"{stack.base_url}/.well-known/oauth-protected-resource/everything/mcp"
    for name, response in documents.items():
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        document = response.json()
        entry = allowlist["servers"][name]
        expected_scopes = sorted(
            {
                s
                for table in ("tool_scopes", "resource_scopes", "prompt_scopes")
                for v in entry.get(table, {}).values()
                for s in v
            }
            | set(entry.get("default_scopes", []))
        )
        # RFC 9728 §3.3: byte-identical to the URL clients use, from public_url.
        assert f'"resource":{json.dumps(stack.mcp_url(name))}' in response.text.replace(" ", "")
        assert document["resource"] == stack.mcp_url(name)
        assert document["authorization_servers"] == [stack.issuer.issuer]
        assert document["scopes_supported"] == expected_scopes, name
        assert document["bearer_methods_supported"] == ["header"]
    assert documents["everything"].json()["scopes_supported"] == [
        "admin",
        "prompts:read",
        "resources:read",
        "tools:call",
        "tools:read",
    ]
    assert spoofed.status_code == 200
    assert spoofed.json()["resource"] == stack.mcp_url(), "resource followed Host/X-Forwarded-* headers"
    assert misdirected.status_code == 421
    assert unknown.status_code == 404


# --- the audit trail ---------------------------------------------------------------------------------


async def test_no_refused_token_appears_in_the_audit_log(world: World) -> None:
    rows = await audit_rows(world.stack)
    assert any(row["http_status"] == 401 for row in rows), "no 401 refusal was audited"
    assert len(world.presented) > 100, "the tables above did not run first"
    text = json.dumps(rows)
    database = Path(world.stack.config.path_for(world.stack.config.audit.database))
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    for token in world.presented:
        for fragment in token_fragments(token):
            assert fragment not in text, f"an audit record holds part of a presented token: {fragment[:16]}…"
            assert fragment.encode() not in raw, f"the audit database file holds part of a token: {fragment[:16]}…"
