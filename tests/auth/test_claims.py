from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.auth.claims import MAX_ACTOR_DEPTH, MAX_IDENTITY_CHARS, identity_defect, principal_from_claims
from mcp_gateway.errors import InvalidToken

from ._support import ABSENT, HOSTILE_IDENTITY_VALUES, ISSUER, RESOURCE, T0, good_claims

TOKEN = "header.payload.signature"


def judge(claims: dict[str, Any], *, now: float = T0, accept_scp: bool = False, **kwargs: Any) -> Any:
    return principal_from_claims(
        claims,
        token=TOKEN,
        issuer=ISSUER,
        resource=RESOURCE,
        now=now,
        leeway=60,
        max_lifetime=3600,
        accept_scp=accept_scp,
        **kwargs,
    )


def test_good_claims_become_a_principal_with_every_field_filled() -> None:
    principal = judge(good_claims())
    assert principal.issuer == ISSUER
    assert principal.subject == "alice"
    assert principal.agent_id == "agent-1"
    assert principal.delegating_user == "alice"
    assert principal.actors == ()
    assert principal.scopes == frozenset({"tools:read", "tools:call"})
    assert principal.expires_at == T0 + 300
    assert principal.token_id == "token-1"
    assert principal.audience == (RESOURCE,)


# SECURITY.md "Claims": exp, nbf, iat with leeway against the injected clock; lifetime cap.
@pytest.mark.parametrize(
    ("overrides", "now"),
    [
        ({"exp": ABSENT}, T0),
        ({"exp": T0 - 61, "iat": T0 - 400, "nbf": T0 - 400}, T0),
        ({"exp": T0 + 10}, T0 + 70),
        ({"nbf": T0 + 61}, T0),
        ({"iat": T0 + 61}, T0),
        ({"exp": T0 + 3601, "iat": T0}, T0),
        ({"exp": T0 + 3661 + 1, "iat": ABSENT, "nbf": ABSENT}, T0),
        ({"exp": T0 + 10**9, "iat": ABSENT}, T0),
    ],
    ids=[
        "exp-missing",
        "expired-beyond-leeway",
        "expired-after-clock-advance",
        "nbf-in-future-beyond-leeway",
        "iat-in-future-beyond-leeway",
        "lifetime-over-max",
        "lifetime-over-max-without-iat",
        "absurd-exp",
    ],
)
def test_time_claims_outside_their_window_are_invalid_token(overrides: dict[str, Any], now: float) -> None:
    with pytest.raises(InvalidToken):
        judge(good_claims(**overrides), now=now)


@pytest.mark.parametrize(
    ("overrides", "now"),
    [
        ({"exp": T0 - 59, "iat": T0 - 400, "nbf": T0 - 400}, T0),
        ({"nbf": T0 + 59}, T0),
        ({"iat": T0 + 59, "nbf": ABSENT}, T0),
        ({"exp": T0 + 3600, "iat": T0}, T0),
        ({"exp": T0 + 3600, "iat": ABSENT, "nbf": ABSENT}, T0),
        ({"iat": ABSENT, "nbf": ABSENT}, T0),
        ({"exp": T0 + 300.5, "iat": T0 + 0.25}, T0),
    ],
    ids=[
        "expired-within-leeway",
        "nbf-within-leeway",
        "iat-within-leeway",
        "lifetime-at-max",
        "no-iat",
        "no-nbf-iat",
        "fractional-times",
    ],
)
def test_time_claims_inside_their_window_with_leeway_are_accepted(overrides: dict[str, Any], now: float) -> None:
    assert judge(good_claims(**overrides), now=now).agent_id == "agent-1"


# SECURITY.md "Claims": iss exact (CVE-2024-53861), aud exact (RFC 8707).
@pytest.mark.parametrize(
    "iss",
    [
        ISSUER + "/",
        ISSUER + ".evil.com",
        ISSUER + "/tenant",
        "https://issuer.tes",
        "HTTPS://ISSUER.TEST",
        " " + ISSUER,
        "https://evil.test/?" + ISSUER,
        ABSENT,
    ],
    ids=["trailing-slash", "suffix-domain", "suffix-path", "prefix", "case", "leading-space", "embedded", "missing"],
)
def test_an_issuer_that_is_not_exactly_the_configured_one_is_invalid_token(iss: Any) -> None:
    with pytest.raises(InvalidToken):
        judge(good_claims(iss=iss))


@pytest.mark.parametrize(
    "aud",
    [
        "http://127.0.0.1:8080/other/mcp",
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/",
        "https://api.other-service.example",
        RESOURCE + "/",
        RESOURCE + "x",
        RESOURCE[:-1],
        "HTTP://127.0.0.1:8080/github/mcp",
        "http://localhost:8080/github/mcp",
        ["http://127.0.0.1:8080/other/mcp", "http://127.0.0.1:8080"],
        [],
        ABSENT,
    ],
    ids=[
        "another-route",
        "bare-origin",
        "bare-origin-slash",
        "another-service",
        "trailing-slash",
        "suffix",
        "prefix",
        "scheme-case",
        "other-host-spelling",
        "array-without-it",
        "empty-array",
        "missing",
    ],
)
def test_an_audience_that_does_not_contain_this_resource_exactly_is_invalid_token(aud: Any) -> None:
    with pytest.raises(InvalidToken):
        judge(good_claims(aud=aud))


def test_an_audience_array_containing_this_resource_is_accepted() -> None:
    principal = judge(good_claims(aud=["https://api.other.example", RESOURCE]))
    assert principal.audience == ("https://api.other.example", RESOURCE)


# SECURITY.md "Claims": wrong JSON types are 401, never an exception.
@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", True),
        ("exp", "1900000000"),
        ("exp", None),
        ("exp", [T0 + 10]),
        ("exp", float("inf")),
        ("exp", float("nan")),
        ("exp", 10**400),
        ("nbf", False),
        ("nbf", "0"),
        ("iat", {"t": 1}),
        ("iss", [ISSUER]),
        ("iss", {"iss": ISSUER}),
        ("aud", {"aud": RESOURCE}),
        ("aud", [RESOURCE, 7]),
        ("aud", 7),
        ("sub", 42),
        ("client_id", ["agent-1"]),
        ("azp", 1),
        ("jti", 1),
        ("scope", ["tools:read"]),
        ("scope", 1),
        ("act", "bob"),
        ("act", {"sub": 5}),
        ("act", {"act": {"sub": "x"}}),
    ],
)
def test_claims_of_the_wrong_json_type_are_invalid_token(claim: str, value: object) -> None:
    claims = good_claims()
    claims[claim] = value
    if claim == "exp" and value is None:
        del claims["exp"]
    with pytest.raises(InvalidToken):
        judge(claims)


# SECURITY.md "Scopes": only exact space-delimited scope tokens count (RFC 6749 §3.3).
@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("tools:read tools:call", {"tools:read", "tools:call"}),
        ("  tools:read   admin ", {"tools:read", "admin"}),
        ("tools:read,admin", {"tools:read,admin"}),
        ("tools:read\tadmin", {"tools:read\tadmin"}),
        ("Admin", {"Admin"}),
        ("", set()),
    ],
    ids=["two", "extra-spaces", "comma-is-not-a-delimiter", "tab-is-not-a-delimiter", "case-sensitive", "empty"],
)
def test_scope_is_split_on_spaces_into_exact_tokens(scope: str, expected: set[str]) -> None:
    scopes = judge(good_claims(scope=scope)).scopes
    assert scopes == expected
    assert "admin" not in scopes or "admin" in expected


def test_scp_array_is_ignored_unless_accepted_and_scope_wins_when_both_are_present() -> None:
    claims = good_claims(scope=ABSENT, scp=["admin", "tools:read"])
    assert judge(claims).scopes == frozenset()
    assert judge(claims, accept_scp=True).scopes == {"admin", "tools:read"}
    assert judge(good_claims(scope="tools:read", scp=["admin"]), accept_scp=True).scopes == {"tools:read"}
    with pytest.raises(InvalidToken):
        judge(good_claims(scope=ABSENT, scp="admin tools:read"), accept_scp=True)
    assert judge(good_claims(scope=ABSENT, scp="admin")).scopes == frozenset()  # not read, so not judged


@pytest.mark.parametrize(
    ("overrides", "agent", "user"),
    [
        ({}, "agent-1", "alice"),
        ({"client_id": ABSENT, "azp": "agent-2"}, "agent-2", "alice"),
        ({"client_id": ABSENT, "sub": "agent-3"}, "agent-3", None),
        ({"sub": "agent-1"}, "agent-1", None),
        ({"client_id": "", "azp": "agent-2"}, "agent-2", "alice"),
    ],
    ids=["client-id", "azp", "sub-only-is-the-client", "sub-equals-client", "empty-client-id-falls-back"],
)
def test_agent_and_delegating_user_come_from_client_id_azp_and_sub(
    overrides: dict[str, Any], agent: str, user: str | None
) -> None:
    principal = judge(good_claims(**overrides))
    assert (principal.agent_id, principal.delegating_user) == (agent, user)


@pytest.mark.parametrize("cnf", [{"jkt": "abc"}, {"x5t#S256": "abc"}, {}, None, "x"])
def test_a_token_carrying_a_confirmation_claim_is_refused_because_we_check_no_proof_of_possession(cnf: object) -> None:
    with pytest.raises(InvalidToken):
        judge({**good_claims(), "cnf": cnf})


def test_a_token_that_names_no_client_at_all_is_invalid() -> None:
    with pytest.raises(InvalidToken):
        judge(good_claims(client_id=ABSENT, sub=ABSENT))


def test_an_rfc8693_act_chain_lists_actors_outermost_first_and_sub_is_the_delegating_user() -> None:
    claims = good_claims(sub="alice", client_id="agent-1", act={"sub": "agent-1", "act": {"sub": "orchestrator"}})
    principal = judge(claims)
    assert principal.actors == ("agent-1", "orchestrator")
    assert principal.delegating_user == "alice"


def test_an_absurdly_deep_act_chain_is_refused() -> None:
    act: dict[str, Any] = {"sub": "a"}
    for _ in range(20):
        act = {"sub": "a", "act": act}
    with pytest.raises(InvalidToken):
        judge(good_claims(act=act))


def test_without_jti_the_token_id_is_the_sha256_of_the_token_never_the_token() -> None:
    principal = judge(good_claims(jti=ABSENT))
    assert principal.token_id == "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    assert TOKEN not in principal.token_id


def test_introspection_mode_allows_a_missing_issuer_but_not_a_wrong_one() -> None:
    assert judge(good_claims(iss=ABSENT), require_issuer=False).issuer == ISSUER
    with pytest.raises(InvalidToken):
        judge(good_claims(iss="https://evil.test"), require_issuer=False)


def test_error_messages_do_not_echo_claim_values() -> None:
    with pytest.raises(InvalidToken) as raised:
        judge(good_claims(iss="https://attacker-controlled.example/<script>"))
    assert "attacker" not in raised.value.message


IDENTITY_CLAIMS = {
    "sub": {},
    "client_id": {},
    "azp": {"client_id": ABSENT},
    "jti": {},
    "act.sub": {},
    "act.act.sub": {},
}


def _with_identity(path: str, value: str) -> dict[str, Any]:
    if path == "act.sub":
        return good_claims(act={"sub": value})
    if path == "act.act.sub":
        return good_claims(act={"sub": "agent-1", "act": {"sub": value}})
    return good_claims(**{path: value, **IDENTITY_CLAIMS[path]})


@pytest.mark.parametrize("family", HOSTILE_IDENTITY_VALUES)
@pytest.mark.parametrize("path", IDENTITY_CLAIMS)
def test_identity_claims_with_control_characters_or_absurd_length_are_invalid_token_naming_the_claim(
    path: str, family: str
) -> None:
    value, defect = HOSTILE_IDENTITY_VALUES[family]
    with pytest.raises(InvalidToken) as raised:
        judge(_with_identity(path, value))
    assert raised.value.message == f"the token's {path} claim {defect}"
    assert value not in raised.value.message and "alice" not in raised.value.message


@pytest.mark.parametrize(
    "value",
    [
        "alice",
        "Jos\u00e9 Garc\u00eda",
        "\u7528\u6237-1",
        "\u05d0\u05dc\u05d9\u05e1",
        "user@example.com",
        "a" * MAX_IDENTITY_CHARS,
    ],
    ids=["ascii", "latin", "cjk", "hebrew-without-overrides", "email", "at-the-cap"],
)
def test_printable_identity_values_of_any_script_up_to_the_cap_are_accepted(value: str) -> None:
    assert identity_defect(value) is None
    principal = judge(good_claims(sub=value, client_id=value, jti=value, act={"sub": value}))
    assert (principal.subject, principal.agent_id, principal.token_id, principal.actors) == (
        value,
        value,
        value,
        (value,),
    )


def test_an_act_chain_at_the_depth_cap_is_accepted_and_one_deeper_is_refused_saying_so() -> None:
    def chain(depth: int) -> dict[str, Any]:
        act: dict[str, Any] = {"sub": f"actor-{depth}"}
        for n in range(depth - 1, 0, -1):
            act = {"sub": f"actor-{n}", "act": act}
        return act

    assert len(judge(good_claims(act=chain(MAX_ACTOR_DEPTH))).actors) == MAX_ACTOR_DEPTH
    with pytest.raises(InvalidToken) as raised:
        judge(good_claims(act=chain(MAX_ACTOR_DEPTH + 1)))
    assert raised.value.message == f"the token's act claim nests more than {MAX_ACTOR_DEPTH} actors"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_claim_names = st.sampled_from(
    ["iss", "aud", "exp", "nbf", "iat", "sub", "client_id", "azp", "jti", "scope", "scp", "act"]
)


@given(st.dictionaries(_claim_names, _json, max_size=12), st.booleans())
def test_arbitrary_claim_values_give_a_principal_or_invalid_token_never_another_exception(
    overrides: dict[str, Any], accept_scp: bool
) -> None:
    claims = good_claims()
    claims.update(overrides)
    try:
        principal = judge(claims, accept_scp=accept_scp)
    except InvalidToken:
        return
    assert RESOURCE in principal.audience
    assert principal.issuer == ISSUER
