"""SECURITY.md "How the token arrives", "Signature, algorithm, key" and "Claims", at the verifier level."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.auth.verifier import TokenVerifier, build_verifier
from mcp_gateway.errors import AuthUnavailable, InvalidToken
from tests._jws import b64url, compact, hmac_token, signed_raw
from tests._servers import refused_url

from ._support import (
    ABSENT,
    HOSTILE_IDENTITY_VALUES,
    ISSUER,
    RESOURCE,
    FakeClock,
    JWKSEndpoint,
    KeyPair,
    StubResponse,
    StubServer,
    ec_key,
    ed25519_key,
    good_claims,
    rsa_key,
    sign,
    stub_server,
)
from .conftest import make_auth_config

pytestmark = pytest.mark.anyio

RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")
EC384 = ec_key("ec384-1", curve="P-384")
ED = ed25519_key("ed-1")
ATTACKER = rsa_key("rsa-1", index=9)  # same kid as ours, different key


@pytest.fixture
async def verifier(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> AsyncIterator[TokenVerifier]:
    jwks_endpoint.keys = [RSA.jwk, EC.jwk, EC384.jwk, ED.jwk]
    verifier = build_verifier(make_auth_config(jwks_server.url + "/jwks.json"), http_client=http_client, clock=clock)
    with anyio.fail_after(5):
        await verifier.start()
    assert verifier.ready
    yield verifier
    await verifier.aclose()


@pytest.fixture
async def cold_verifier(http_client: httpx2.AsyncClient, clock: FakeClock) -> TokenVerifier:
    """JWKS unreachable: anything that gets as far as a key lookup is AuthUnavailable, so an
    InvalidToken from this verifier proves the token was refused before any cryptography."""
    return build_verifier(make_auth_config(refused_url() + "/jwks.json"), http_client=http_client, clock=clock)


async def verify(verifier: TokenVerifier, token: str, resource: str = RESOURCE) -> Any:
    with anyio.fail_after(5):
        return await verifier.verify(token, resource=resource)


async def refused(verifier: TokenVerifier, token: str, error: type[Exception] = InvalidToken) -> Exception:
    with pytest.raises(error) as raised, anyio.fail_after(5):
        await verifier.verify(token, resource=RESOURCE)
    assert len(token) < 8 or token not in str(raised.value)  # messages never echo the token
    return raised.value


# --- accepted tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg"),
    [(RSA, "RS256"), (RSA, "PS256"), (EC, "ES256"), (EC384, "ES384"), (ED, "EdDSA")],
    ids=["RS256", "PS256", "ES256", "ES384", "EdDSA"],
)
async def test_a_token_signed_by_a_jwks_key_with_an_allowed_algorithm_is_accepted(
    verifier: TokenVerifier, key: KeyPair, alg: str
) -> None:
    principal = await verify(verifier, sign(key, good_claims(), alg=alg))
    assert (principal.agent_id, principal.delegating_user, principal.token_id) == ("agent-1", "alice", "token-1")


async def test_a_token_without_kid_is_accepted_when_exactly_one_key_fits_its_algorithm(verifier: TokenVerifier) -> None:
    assert (await verify(verifier, sign(EC, good_claims(), kid=None))).agent_id == "agent-1"


async def test_a_token_without_kid_is_refused_when_several_keys_fit(
    verifier: TokenVerifier, jwks_endpoint: JWKSEndpoint, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [RSA.jwk, rsa_key("rsa-2", index=1).jwk]
    clock.advance(301)  # let the cache pick up the two-RSA-key set
    await refused(verifier, sign(RSA, good_claims(now=clock.now), kid=None))


# --- SECURITY.md: How the token arrives (verifier level; no crypto for malformed or oversized) ---------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "abc.def",
        "a.b.c.d",
        "a.b.c.d.e.f",
        "!!!.@@@.###",
        "eyJhbGciOiJSUzI1NiJ9.e30.====",
        "eyJhbGciOiJSUzI1NiJ9=.e30.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e3+0.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2l",  # non-canonical trailing bits
        b64url(b"not json") + ".e30.c2ln",
        b64url(b"[1,2]") + ".e30.c2ln",
        b64url(b'{"alg":"none","alg":"RS256","kid":"rsa-1"}') + ".e30.c2ln",
        b64url(b'{"alg":NaN}') + ".e30.c2ln",
        b64url(b"\xff\xfe") + ".e30.c2ln",
        b64url(b"[" * 5000 + b"]" * 5000) + ".e30.c2ln",
        "x" * 8193,
        compact({"alg": "RS256", "kid": "rsa-1"}, good_claims()) + "A" * 9000,
        "€.€.€",
    ],
    ids=[
        "empty",
        "one-segment",
        "two-segments",
        "four-segments",
        "six-segments",
        "garbage-base64",
        "padding-only-signature",
        "padded-header",
        "standard-base64-alphabet",
        "non-canonical-base64",
        "header-not-json",
        "header-not-object",
        "duplicate-header-member",
        "nan-in-header",
        "header-not-utf8",
        "deeply-nested-header",
        "oversized",
        "oversized-but-otherwise-fine",
        "non-ascii",
    ],
)
async def test_malformed_or_oversized_tokens_are_refused_before_any_key_lookup(
    cold_verifier: TokenVerifier, token: str
) -> None:
    await refused(cold_verifier, token)


# --- SECURITY.md: Signature, algorithm, key ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "NoNe", "none "])
@pytest.mark.parametrize("signature", [b"", b"anything"], ids=["empty-signature", "some-signature"])
async def test_alg_none_in_any_capitalisation_is_invalid_token(
    verifier: TokenVerifier, jwks_server: StubServer, alg: str, signature: bytes
) -> None:
    before = jwks_server.count("/jwks.json")
    await refused(verifier, compact({"alg": alg, "kid": "rsa-1"}, good_claims(), signature))
    await refused(verifier, compact({"alg": alg}, good_claims(), signature))
    assert jwks_server.count("/jwks.json") == before


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "hs256"])
@pytest.mark.parametrize(
    "secret",
    [RSA.public_pem, json.dumps(RSA.jwk).encode(), base64.urlsafe_b64decode(RSA.jwk["n"] + "==")],
    ids=["pem", "jwk-json", "modulus"],
)
async def test_hmac_token_keyed_with_the_rsa_public_key_is_invalid_token_cve_2022_29217(
    verifier: TokenVerifier, alg: str, secret: bytes
) -> None:
    header = {"alg": alg, "kid": "rsa-1", "typ": "JWT"}
    error = await refused(verifier, hmac_token(secret, alg, header, good_claims()))
    assert "algorithm" in str(error)


@pytest.mark.parametrize(
    ("signer", "alg", "kid"),
    [
        (EC, "ES256", "rsa-1"),  # EC signature presented under the RSA key's kid
        (RSA, "RS256", "ec-1"),  # RSA signature presented under the EC key's kid
        (ED, "EdDSA", "rsa-1"),
        (EC384, "ES384", "ec-1"),  # P-384 algorithm against a P-256 key
        (RSA, "RS256", "ed-1"),
    ],
    ids=["ES256-on-rsa-key", "RS256-on-ec-key", "EdDSA-on-rsa-key", "ES384-on-P-256-key", "RS256-on-okp-key"],
)
async def test_each_key_verifies_only_its_own_algorithm_family(
    verifier: TokenVerifier, signer: KeyPair, alg: str, kid: str
) -> None:
    await refused(verifier, sign(signer, good_claims(), alg=alg, kid=kid))


async def test_a_correctly_signed_token_with_an_algorithm_not_configured_is_invalid_token(
    verifier: TokenVerifier,
) -> None:
    await refused(verifier, sign(RSA, good_claims(), alg="RS512"))
    await refused(verifier, sign(RSA, good_claims(), alg="PS384"))


async def test_a_jwk_that_names_its_alg_is_used_with_that_alg_only(
    verifier: TokenVerifier, jwks_endpoint: JWKSEndpoint, clock: FakeClock
) -> None:
    jwks_endpoint.keys = [{**RSA.jwk, "alg": "RS256"}]
    clock.advance(301)
    assert (await verify(verifier, sign(RSA, good_claims(now=clock.now)))).agent_id == "agent-1"
    await refused(verifier, sign(RSA, good_claims(now=clock.now, jti="t2"), alg="PS256"))


@pytest.mark.parametrize("pointer", ["jku", "x5u", "x5c", "jwk"])
async def test_header_key_pointers_are_never_followed_and_cause_no_request(
    verifier: TokenVerifier, pointer: str
) -> None:
    hits: list[str] = []

    async def attacker(request: Any) -> StubResponse:
        hits.append(request.path)
        return StubResponse.json({"keys": [ATTACKER.jwk]})

    async with stub_server(attacker) as evil:
        values: dict[str, Any] = {
            "jku": evil.url + "/jwks.json",
            "x5u": evil.url + "/cert.pem",
            "x5c": [base64.b64encode(b"not really a certificate").decode()],
            "jwk": ATTACKER.jwk,
        }
        # Signed by the attacker's key, with the attacker's key material referenced or embedded.
        await refused(verifier, sign(ATTACKER, good_claims(), **{pointer: values[pointer]}))
        # Even a token signed by the real key is refused when it carries a pointer (we never trust them).
        await refused(verifier, sign(RSA, good_claims(), **{pointer: values[pointer]}))
    assert hits == []


async def test_a_token_signed_by_a_different_key_under_our_kid_is_invalid_token(verifier: TokenVerifier) -> None:
    error = await refused(verifier, sign(ATTACKER, good_claims()))
    assert "signature" in str(error)


async def test_a_tampered_payload_or_signature_is_invalid_token(verifier: TokenVerifier) -> None:
    header, _, signature = sign(RSA, good_claims()).split(".")
    forged_payload = b64url(json.dumps(good_claims(scope="admin")).encode())
    await refused(verifier, f"{header}.{forged_payload}.{signature}")
    await refused(verifier, f"{header}.{forged_payload}.{signature[:-8]}")
    es_header, es_payload, es_signature = sign(EC, good_claims()).split(".")
    await refused(verifier, f"{es_header}.{es_payload}.{es_signature[:40]}")  # wrong length for P-256
    await refused(verifier, f"{es_header}.{es_payload}.")


async def test_an_unknown_kid_causes_one_refetch_then_invalid_token(
    verifier: TokenVerifier, jwks_server: StubServer, clock: FakeClock
) -> None:
    stranger = rsa_key("rotated-away", index=3)
    await refused(verifier, sign(stranger, good_claims()))
    assert jwks_server.count("/jwks.json") == 1  # the start-up fetch was moments ago: cool-down holds
    clock.advance(10)
    error = await refused(verifier, sign(stranger, good_claims(now=clock.now)))
    assert "unknown key" in str(error)
    assert jwks_server.count("/jwks.json") == 2


async def test_a_flood_of_random_kids_is_at_most_one_fetch_per_cooldown(
    verifier: TokenVerifier, jwks_server: StubServer, clock: FakeClock
) -> None:
    stranger = rsa_key("x", index=4)
    clock.advance(10)  # past the start-up fetch's cool-down
    before = jwks_server.count("/jwks.json")

    async def attempt(i: int) -> None:
        with pytest.raises(InvalidToken):
            await verifier.verify(
                sign(stranger, good_claims(now=clock.now), kid=os.urandom(8).hex()), resource=RESOURCE
            )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:  # concurrent flood
            for i in range(100):
                group.start_soon(attempt, i)
        for i in range(100):  # sequential flood within the same cool-down
            await attempt(i)
    assert jwks_server.count("/jwks.json") == before + 1

    clock.advance(10)  # the cool-down has passed: one more fetch is allowed, still only one
    with anyio.fail_after(10):
        for i in range(50):
            await attempt(i)
    assert jwks_server.count("/jwks.json") == before + 2


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1},
        {"alg": "RS256", "kid": "rsa-1", "crit": ["urn:example:unknown"], "urn:example:unknown": True},
        {"alg": "RS256", "kid": "rsa-1", "crit": ["b64"], "b64": False},
        {"alg": "RS256", "kid": "rsa-1", "crit": []},
        {"alg": "RS256", "kid": "rsa-1", "b64": True},
    ],
    ids=["crit-registered-name", "crit-unknown-extension", "crit-b64", "crit-empty", "b64-without-crit"],
)
async def test_crit_with_an_extension_we_do_not_understand_is_invalid_token(
    verifier: TokenVerifier, header: dict[str, Any]
) -> None:
    signing_input = compact(header, good_claims()).rsplit(".", 1)[0]
    import jwt as pyjwt

    signature = pyjwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), RSA.private_key)
    await refused(verifier, f"{signing_input}.{b64url(signature)}")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rsa-1"},
        {"alg": "dir", "enc": "A128CBC-HS256", "zip": "DEF"},
        {"alg": "RS256", "kid": "rsa-1"},
    ],
    ids=["rsa-oaep", "dir-with-zip", "jws-header-in-five-segments"],
)
async def test_a_jwe_with_five_segments_is_invalid_token_without_decrypting_anything(
    cold_verifier: TokenVerifier, header: dict[str, Any]
) -> None:
    # A "ciphertext" that is a DEFLATE bomb would be expensive to inflate; it is never looked at.
    bomb = b64url(b"\x78\x9c" + b"\x00" * 4000)
    segments = [b64url(json.dumps(header).encode()), b64url(os.urandom(256)), b64url(os.urandom(12)), bomb]
    token = ".".join([*segments, b64url(os.urandom(16))])
    error = await refused(cold_verifier, token)
    assert "encrypted" in str(error)
    await refused(cold_verifier, "a.b.c.d.e")


# --- SECURITY.md: Claims ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": ABSENT},
        {"exp": 1_799_999_000, "iat": 1_799_998_000, "nbf": 1_799_998_000},
        {"nbf": 1_800_000_100},
        {"iat": 1_800_000_100, "nbf": ABSENT},
        {"exp": 1_800_003_601, "iat": 1_800_000_000},
        {"exp": True},
        {"exp": "1800000300"},
        {"iss": ISSUER + "/"},
        {"iss": ISSUER + ".attacker.example"},
        {"iss": "https://issuer.tes"},
        {"iss": [ISSUER]},
        {"aud": "http://127.0.0.1:8080/other/mcp"},
        {"aud": "http://127.0.0.1:8080"},
        {"aud": "https://api.other-service.example"},
        {"aud": [RESOURCE + "/", "http://127.0.0.1:8080"]},
        {"aud": {"0": RESOURCE}},
        {"scope": ["tools:read"]},
        {"sub": 1, "client_id": ABSENT},
    ],
    ids=[
        "exp-missing",
        "expired",
        "not-yet-valid",
        "issued-in-future",
        "lifetime-over-max",
        "exp-bool",
        "exp-string",
        "iss-trailing-slash",
        "iss-suffix",
        "iss-prefix",
        "iss-array",
        "aud-another-route",
        "aud-bare-origin",
        "aud-other-service",
        "aud-array-without-it",
        "aud-object",
        "scope-array",
        "sub-number",
    ],
)
async def test_signed_tokens_with_bad_claims_are_invalid_token(
    verifier: TokenVerifier, overrides: dict[str, Any]
) -> None:
    await refused(verifier, sign(EC, good_claims(**overrides)))


async def test_an_audience_array_containing_this_route_is_accepted_and_other_routes_refuse_the_token(
    verifier: TokenVerifier,
) -> None:
    token = sign(EC, good_claims(aud=["https://api.other.example", RESOURCE]))
    assert (await verify(verifier, token)).audience == ("https://api.other.example", RESOURCE)
    # The verified-token cache is keyed per resource: a hit for one route says nothing for another.
    with pytest.raises(InvalidToken), anyio.fail_after(5):
        await verifier.verify(token, resource="http://127.0.0.1:8080/other/mcp")


async def test_expiry_follows_the_injected_clock_even_for_a_cached_token(
    verifier: TokenVerifier, clock: FakeClock
) -> None:
    token = sign(EC, good_claims(exp=int(clock.now) + 100))
    assert (await verify(verifier, token)).ttl(clock.now) == 100
    clock.advance(159)  # past exp, inside leeway: the cache no longer answers, the verifier still accepts
    await verify(verifier, token)
    clock.advance(1)
    await refused(verifier, token)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"iss":"https://evil.test",' + json.dumps(good_claims())[1:].encode(),  # the good iss comes last
        b"[1,2,3]",
        b'{"exp": NaN}',
        b"not json",
    ],
    ids=["duplicate-claim", "array", "nan", "not-json"],
)
async def test_signed_payloads_that_are_not_a_clean_json_object_are_invalid_token(
    verifier: TokenVerifier, payload: bytes
) -> None:
    await refused(verifier, signed_raw(EC.private_key, EC.alg, b'{"alg":"ES256","kid":"ec-1"}', payload))


@pytest.mark.parametrize("claim", ["sub", "client_id", "azp", "jti", "act.sub", "act.act.sub"])
async def test_signed_tokens_whose_identity_claims_hold_control_characters_are_invalid_token_naming_the_claim(
    verifier: TokenVerifier, claim: str
) -> None:
    # SECURITY.md "identity claims with control characters are refused", through real ES256 signatures.
    for family, (value, defect) in HOSTILE_IDENTITY_VALUES.items():
        if claim.startswith("act."):
            act: dict[str, Any] = {"sub": value}
            claims = good_claims(act=act if claim == "act.sub" else {"sub": "agent-1", "act": act})
        else:
            claims = good_claims(**{claim: value, **({"client_id": ABSENT} if claim == "azp" else {})})
        error = await refused(verifier, sign(EC, claims))
        assert str(error) == f"the token's {claim} claim {defect}", family
        assert "alice" not in str(error), family
    assert (
        await verify(verifier, sign(EC, good_claims(sub="Jos\u00e9", act={"sub": "agent-1"})))
    ).subject == "Jos\u00e9"


async def test_only_exact_scope_tokens_reach_the_principal(verifier: TokenVerifier) -> None:
    principal = await verify(verifier, sign(EC, good_claims(scope="tools:read admin:all Admin tools:call,admin")))
    assert principal.scopes == {"tools:read", "admin:all", "Admin", "tools:call,admin"}
    assert "admin" not in principal.scopes


# --- Faults: the JWKS endpoint --------------------------------------------------------------------


async def test_jwks_down_at_cold_start_means_not_ready_and_every_token_refused_with_503(
    http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    verifier = build_verifier(make_auth_config(refused_url() + "/jwks.json"), http_client=http_client, clock=clock)
    with anyio.fail_after(5):
        await verifier.start()
    assert not verifier.ready
    for token in (sign(RSA, good_claims()), sign(EC, good_claims()), sign(RSA, good_claims(), kid="other")):
        error = await refused(verifier, token, AuthUnavailable)
        assert isinstance(error, AuthUnavailable) and error.status_code == 503


async def test_jwks_answering_errors_at_cold_start_recovers_after_the_cooldown(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    jwks_endpoint.keys, jwks_endpoint.mode = [EC.jwk], "error"
    verifier = build_verifier(make_auth_config(jwks_server.url + "/jwks.json"), http_client=http_client, clock=clock)
    with anyio.fail_after(5):
        await verifier.start()
    assert not verifier.ready
    jwks_endpoint.mode = "up"
    await refused(verifier, sign(EC, good_claims()), AuthUnavailable)  # still inside the cool-down
    clock.advance(10)
    assert (await verify(verifier, sign(EC, good_claims(now=clock.now)))).agent_id == "agent-1"
    assert verifier.ready
    assert jwks_server.count("/jwks.json") == 2


async def test_a_directly_built_verifier_still_refuses_none_and_hmac_even_if_they_are_listed(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    from mcp_gateway.auth.jwks import JWKSCache
    from mcp_gateway.auth.jwt_verifier import JWTVerifier

    jwks_endpoint.keys = [RSA.jwk, {"kty": "oct", "k": b64url(RSA.public_pem), "kid": "hmac"}]
    algorithms = {"RS256", "HS256", "none", "None"}
    keys = JWKSCache(
        http_client, issuer=ISSUER, jwks_uri=jwks_server.url + "/jwks.json", algorithms=algorithms, clock=clock
    )
    verifier = JWTVerifier(keys, issuer=ISSUER, algorithms=algorithms, clock=clock)
    with anyio.fail_after(5):
        await verifier.start()
    await refused(verifier, hmac_token(RSA.public_pem, "HS256", {"kid": "rsa-1"}, good_claims()))
    await refused(verifier, hmac_token(RSA.public_pem, "HS256", {"kid": "hmac"}, good_claims()))
    await refused(verifier, compact({"alg": "None", "kid": "rsa-1"}, good_claims()))
    # Refused on the header alone: not even an unknown kid makes them worth a JWKS refetch.
    clock.advance(10)
    await refused(verifier, hmac_token(RSA.public_pem, "HS256", {"kid": "new"}, good_claims(now=clock.now)))
    await refused(verifier, compact({"alg": "none", "kid": "new"}, good_claims(now=clock.now)))
    assert jwks_server.count("/jwks.json") == 1
    assert (await verify(verifier, sign(RSA, good_claims(now=clock.now)))).agent_id == "agent-1"


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
async def test_access_token_and_legacy_jwt_types_are_accepted(verifier: TokenVerifier, typ: str | None) -> None:
    assert (await verify(verifier, sign(EC, good_claims(), typ=typ))).agent_id == "agent-1"


@pytest.mark.parametrize("typ", ["dpop+jwt", "logout+jwt", "secevent+jwt", "oauth-id-jag+jwt", "JOSE", 7, ["at+jwt"]])
async def test_jwts_typed_as_something_other_than_an_access_token_are_invalid_token(
    verifier: TokenVerifier, typ: object
) -> None:
    error = await refused(verifier, sign(EC, good_claims(), typ=typ))
    assert "not an access token" in str(error)


async def test_require_access_token_typ_accepts_only_rfc9068_typed_tokens(
    jwks_endpoint: JWKSEndpoint, jwks_server: StubServer, http_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    from mcp_gateway.auth.jwks import JWKSCache
    from mcp_gateway.auth.jwt_verifier import JWTVerifier

    jwks_endpoint.keys = [EC.jwk]
    keys = JWKSCache(
        http_client, issuer=ISSUER, jwks_uri=jwks_server.url + "/jwks.json", algorithms={"ES256"}, clock=clock
    )
    verifier = JWTVerifier(keys, issuer=ISSUER, algorithms={"ES256"}, clock=clock, require_access_token_typ=True)
    assert (await verify(verifier, sign(EC, good_claims(), typ="at+jwt"))).agent_id == "agent-1"
    await refused(verifier, sign(EC, good_claims(), typ="JWT"))
    await refused(verifier, sign(EC, good_claims(), typ=None))


async def test_a_sender_constrained_token_is_not_accepted_as_a_bearer_token(verifier: TokenVerifier) -> None:
    await refused(verifier, sign(EC, good_claims(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})))
    await refused(verifier, sign(EC, good_claims(cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"})))
