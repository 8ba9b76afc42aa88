"""Sealed session ids: the sealer itself, and how the gateway binds sessions to routes and principals."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.audit.sink import MemoryAuditSink
from mcp_gateway.errors import RateLimited, SessionNotFound
from mcp_gateway.limits.sessions import SessionLedger
from mcp_gateway.proxy.sessions import SessionClaims, SessionSealer, principal_fingerprint
from tests._mcp import HANDSHAKE, initialize_body, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import WatchedAuditSink, call_body, json_error, sdk_client, spellings_of_the_same_bytes

KEY = bytes(range(32))
ALICE = principal_fingerprint("issuer|agent-a|user-a")
BOB = principal_fingerprint("issuer|agent-b|user-b")


def _claims(upstream: str = "upstream-session-1") -> SessionClaims:
    return SessionClaims("everything", upstream, ALICE, 1_700_000_000)


# -- the sealer --------------------------------------------------------------------------------------


def test_sealed_id_opens_to_the_claims_it_was_sealed_with() -> None:
    sealer = SessionSealer(KEY)
    assert sealer.open(sealer.seal(_claims()), server="everything", principal=ALICE) == _claims()


def test_sealed_id_is_visible_ascii_and_never_contains_the_upstream_id() -> None:
    sealed = SessionSealer(KEY).seal(_claims("UPSTREAM-SECRET-ID"))
    assert all(0x21 <= ord(c) <= 0x7E for c in sealed)
    assert "UPSTREAM" not in sealed
    assert b"UPSTREAM" not in base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))


def test_sealing_twice_gives_different_ids() -> None:
    sealer = SessionSealer(KEY)
    assert sealer.seal(_claims()) != sealer.seal(_claims())


def test_any_sealer_holding_the_key_opens_the_id() -> None:
    sealed = SessionSealer(KEY).seal(_claims())
    assert SessionSealer(KEY).open(sealed, server="everything", principal=ALICE).upstream_session_id == (
        "upstream-session-1"
    )


@pytest.mark.parametrize("position", [0, 1, 5, 20, -1])
def test_tampered_sealed_id_is_session_not_found(position: int) -> None:
    sealer = SessionSealer(KEY)
    raw = bytearray(base64.urlsafe_b64decode(sealer.seal(_claims()) + "=="))
    raw[position] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(SessionNotFound):
        sealer.open(tampered, server="everything", principal=ALICE)


def test_sealed_id_for_another_route_is_session_not_found() -> None:
    sealer = SessionSealer(KEY)
    with pytest.raises(SessionNotFound):
        sealer.open(sealer.seal(_claims()), server="other", principal=ALICE)


def test_sealed_id_presented_by_another_principal_is_session_not_found() -> None:
    sealer = SessionSealer(KEY)
    with pytest.raises(SessionNotFound):
        sealer.open(sealer.seal(_claims()), server="everything", principal=BOB)


def test_sealed_id_from_another_key_is_session_not_found() -> None:
    with pytest.raises(SessionNotFound):
        SessionSealer(bytes(32)).open(SessionSealer(KEY).seal(_claims()), server="everything", principal=ALICE)


@pytest.mark.parametrize("garbage", ["", "not base64 at all!", "AAAA", "A" * 2000, "Zm9v", "\u00e9t\u00e9"])
def test_garbage_session_id_is_session_not_found(garbage: str) -> None:
    with pytest.raises(SessionNotFound):
        SessionSealer(KEY).open(garbage, server="everything", principal=ALICE)


def _sealed_with_every_variant_kind(sealer: SessionSealer) -> str:
    """A sealed id whose spellings include `+`/`/` and unused trailing bits (the nonce is random)."""
    for attempt in range(500):
        sealed = sealer.seal(_claims("u" * (attempt % 3 + 1)))
        raw_length = len(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
        if "-" in sealed and "_" in sealed and raw_length % 3:
            return sealed
    raise AssertionError("no sealed id with both - and _ in 500 tries")


# SECURITY.md "Identifiers the gateway issues have one accepted spelling".
def test_non_canonical_spellings_of_a_sealed_session_id_are_session_not_found() -> None:
    sealer = SessionSealer(KEY)
    sealed = _sealed_with_every_variant_kind(sealer)
    variants = spellings_of_the_same_bytes(sealed)
    assert {"padded", "standard-alphabet", "other-trailing-bits"} <= variants.keys()
    for variant in variants.values():
        with pytest.raises(SessionNotFound):
            sealer.open(variant, server="everything", principal=ALICE)
        # A fresh sealer (no cache of opened ids) refuses it too: the AEAD alone would have accepted it.
        with pytest.raises(SessionNotFound):
            SessionSealer(KEY).open(variant, server="everything", principal=ALICE)
    assert sealer.open(sealed, server="everything", principal=ALICE).upstream_session_id.startswith("u")


def test_non_canonical_spellings_of_a_relayed_event_id_do_not_untag() -> None:
    event_ids = SessionSealer(KEY).event_ids(_claims())
    # An upstream id whose tag holds both - and _, so the standard-alphabet spelling differs.
    tags = (event_ids.tag(str(n).encode()) for n in range(10_000))
    tagged = next(t for t in tags if b"-" in t.rpartition(b".")[2] and b"_" in t.rpartition(b".")[2])
    event_id, _, mac = tagged.decode().rpartition(".")
    assert event_ids.untag(tagged) == event_id.encode()
    variants = spellings_of_the_same_bytes(mac)
    assert "standard-alphabet" in variants  # a 96-bit MAC has no padding and no unused bits to vary
    for kind, variant in variants.items():
        presented = f"{event_id}.{variant}".encode()
        assert event_ids.untag(presented) is None, kind


def test_event_id_tagged_in_a_session_untags_in_that_session_only() -> None:
    sealer = SessionSealer(KEY)
    tagged = sealer.event_ids(_claims()).tag(b"17")
    assert tagged.startswith(b"17.")
    assert sealer.event_ids(_claims()).untag(tagged) == b"17"
    assert SessionSealer(KEY).event_ids(_claims()).untag(tagged) == b"17"  # any replica with the key
    assert sealer.event_ids(_claims("upstream-session-2")).untag(tagged) is None
    assert sealer.event_ids(SessionClaims("everything", "upstream-session-1", BOB, 0)).untag(tagged) is None
    assert SessionSealer(bytes(32)).event_ids(_claims()).untag(tagged) is None


@pytest.mark.parametrize("presented", [b"17", b"18.AAAAAAAAAAAAAAAA", b"", b".", b"17." + b"A" * 16])
def test_event_id_without_this_sessions_tag_does_not_untag(presented: bytes) -> None:
    assert SessionSealer(KEY).event_ids(_claims()).untag(presented) is None


def test_upstream_event_ids_containing_dots_survive_tagging() -> None:
    event_ids = SessionSealer(KEY).event_ids(_claims())
    assert event_ids.untag(event_ids.tag(b"stream.1.2")) == b"stream.1.2"


def test_session_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionSealer(b"short")


# -- the ledger: sessions per principal --------------------------------------------------------------


def test_ledger_refuses_a_session_over_the_cap_with_retry_after_the_oldest_expires() -> None:
    ledger = SessionLedger(2, max_age_seconds=100)
    for n, created in enumerate((10.0, 20.0)):
        ledger.reserve(ALICE, created)
        ledger.opened(ALICE, "everything", f"s{n}", created)
    with pytest.raises(RateLimited) as refused:
        ledger.reserve(ALICE, 30.0)
    assert refused.value.retry_after == 80.0  # the session created at 10 expires at 110
    assert ("retry-after", "80") in refused.value.headers
    assert "max_sessions_per_principal" in refused.value.message
    ledger.reserve(BOB, 30.0)  # the cap is per principal
    assert (ledger.count(ALICE), ledger.count(BOB)) == (2, 1)


def test_ledger_counts_initializes_in_flight_so_concurrent_ones_cannot_overshoot() -> None:
    ledger = SessionLedger(2, max_age_seconds=100)
    ledger.reserve(ALICE, 0.0)
    ledger.reserve(ALICE, 0.0)
    with pytest.raises(RateLimited) as refused:
        ledger.reserve(ALICE, 0.0)
    assert refused.value.retry_after == 1.0
    ledger.cancel(ALICE)  # one initialize created no session
    ledger.reserve(ALICE, 0.0)
    assert ledger.count(ALICE) == 2


def test_ledger_frees_a_place_when_a_session_ends_or_expires() -> None:
    ledger = SessionLedger(1, max_age_seconds=100)
    ledger.reserve(ALICE, 0.0)
    ledger.opened(ALICE, "everything", "s1", 0.0)
    ledger.closed(ALICE, "everything", "s1")
    ledger.reserve(ALICE, 1.0)
    ledger.opened(ALICE, "everything", "s2", 1.0)
    with pytest.raises(RateLimited):
        ledger.reserve(ALICE, 100.0)
    ledger.reserve(ALICE, 101.0)  # s2 is 100 s old: expired, no longer counted
    assert SessionClaims("everything", "s2", ALICE, 1).expired(101.0, max_age_seconds=100)
    assert not SessionClaims("everything", "s2", ALICE, 1).expired(100.5, max_age_seconds=100)


def test_ledger_closing_an_unknown_session_is_harmless() -> None:
    ledger = SessionLedger(1, max_age_seconds=100)
    ledger.closed(ALICE, "everything", "never-opened")
    ledger.cancel(ALICE)
    assert ledger.count(ALICE) == 0
    with pytest.raises(ValueError, match="positive"):
        SessionLedger(0, max_age_seconds=1)


# -- sessions through the gateway --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    audit = WatchedAuditSink()
    async with gateway_stack(tmp_path_factory.mktemp("sessions"), audit=audit) as stack:
        stack.extra["audit"] = audit
        yield stack


@pytest.mark.anyio
async def test_client_sees_the_gateways_session_id_never_the_upstreams(stack: Stack, http: httpx2.AsyncClient) -> None:
    before = len(stack.tap.requests)
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), stack.token())
    # open_session's second request (notifications/initialized) carried the upstream's id.
    upstream_id = stack.tap.requests[before + 1][1]["mcp-session-id"]
    assert session != upstream_id
    assert upstream_id not in session


@pytest.mark.anyio
async def test_session_of_one_principal_presented_by_another_is_404_and_nothing_is_forwarded(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    audit: MemoryAuditSink = stack.extra["audit"]
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), stack.token(client="agent-a"))
        forwarded, recorded = len(stack.tap.requests), len(audit.records)
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(stack.token(client="agent-b"), version=HANDSHAKE, session=session),
            json=call_body("echo", {"message": "hijack"}),
        )
    assert response.status_code == 404
    assert json_error(response) == {"code": -32001, "message": "Session not found"}
    assert len(stack.tap.requests) == forwarded
    records = audit.records[recorded:]
    assert [(r.event_type, r.agent_id, r.http_status, r.tool) for r in records] == [("refusal", "agent-b", 404, "echo")]


@pytest.mark.anyio
@pytest.mark.parametrize("session", ["garbage", "A" * 64, "x" * 5000])
async def test_unknown_session_id_is_404(stack: Stack, http: httpx2.AsyncClient, session: str) -> None:
    forwarded = len(stack.tap.requests)
    with anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(stack.token(), version=HANDSHAKE, session=session),
            json=call_body("echo", {"message": "x"}),
        )
    assert response.status_code == 404
    assert json_error(response)["message"] == "Session not found"
    assert len(stack.tap.requests) == forwarded


@pytest.mark.anyio
async def test_non_canonical_session_id_spelling_is_unknown_404(stack: Stack, http: httpx2.AsyncClient) -> None:
    # SECURITY.md "Identifiers the gateway issues have one accepted spelling": the same sealed bytes spelt
    # another way are an unknown session, so every call the audit shows for a session carries one id.
    audit: WatchedAuditSink = stack.extra["audit"]
    token = stack.token()
    with anyio.fail_after(30):
        for _ in range(20):  # the nonce is random: find an id whose standard-alphabet spelling differs
            session = await open_session(http, stack.mcp_url(), token)
            if "-" in session or "_" in session:
                break
        headers = post_headers(token, version=HANDSHAKE, session=session)
        accepted = [
            await http.post(stack.mcp_url(), headers=headers, json=call_body("echo", {"message": f"call {n}"}, n))
            for n in (2, 3)
        ]
        # Only what an HTTP header can carry: no CR/LF, no leading or trailing whitespace, ASCII.
        variants = {
            kind: variant
            for kind, variant in spellings_of_the_same_bytes(session).items()
            if variant.isascii() and variant.isprintable() and variant == variant.strip()
        }
        assert {"padded", "standard-alphabet", "space-inside"} <= variants.keys()
        forwarded = len(stack.tap.requests)
        refused = {
            kind: await http.post(
                stack.mcp_url(),
                headers=post_headers(token, version=HANDSHAKE, session=variant),
                json=call_body("echo", {"message": "other spelling"}, 4),
            )
            for kind, variant in variants.items()
        }
        # Intents are written before anything is forwarded; outcomes may land just after the answer.
        intents = [r for r in audit.records if r.phase == "intent" and r.tool == "echo" and r.session_id == session]
        outcomes = [
            (await audit.wait_for(lambda r, i=intent: r.phase == "outcome" and r.event_id == i.event_id))[0]
            for intent in intents
        ]
    assert [response.status_code for response in accepted] == [200, 200]
    assert {kind: response.status_code for kind, response in refused.items()} == dict.fromkeys(variants, 404)
    assert all(json_error(response)["message"] == "Session not found" for response in refused.values())
    assert len(stack.tap.requests) == forwarded
    assert all("other spelling" not in raw.decode("latin-1") for _, _, raw in stack.tap.requests)
    # The audit names both accepted calls by the canonical id, so a query by session finds them all;
    # the refused spellings opened no session, so no call is recorded under them as a session's.
    # (Outcome records name their call by event id; queries join them to the intent.)
    assert len(intents) == 2
    assert [r.outcome for r in outcomes] == ["ok", "ok"]
    assert not [r for r in audit.records if r.session_id in variants.values() and r.phase == "intent"]


@pytest.mark.anyio
async def test_handshake_request_without_a_session_id_is_400(stack: Stack, http: httpx2.AsyncClient) -> None:
    forwarded = len(stack.tap.requests)
    with anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers=post_headers(stack.token(), version=HANDSHAKE),
            json=call_body("echo", {"message": "x"}),
        )
    assert response.status_code == 400
    assert json_error(response) == {"code": -32600, "message": "Bad Request: Mcp-Session-Id header is required"}
    assert len(stack.tap.requests) == forwarded


@pytest.mark.anyio
async def test_upstream_404_for_a_session_becomes_a_client_404_with_one_audit_outcome(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    audit: MemoryAuditSink = stack.extra["audit"]
    token = stack.token()
    with anyio.fail_after(10):
        session = await open_session(http, stack.mcp_url(), token)
        headers = post_headers(token, version=HANDSHAKE, session=session)
        ended = await http.delete(stack.mcp_url(), headers=headers)
        recorded = len(audit.records)
        response = await http.post(stack.mcp_url(), headers=headers, json=call_body("echo", {"message": "late"}))
    assert ended.status_code == 200
    assert response.status_code == 404
    assert json_error(response) == {"code": -32001, "message": "Session not found"}
    # The call reached the upstream (which said 404), so it has an intent and exactly one outcome.
    records = audit.records[recorded:]
    assert [(r.phase, r.tool, r.http_status, r.outcome) for r in records] == [
        ("intent", "echo", None, None),
        ("outcome", "echo", 404, "session_not_found"),
    ]
    assert records[0].event_id == records[1].event_id


@pytest.mark.anyio
async def test_upstream_without_sessions_still_gets_a_session_bound_to_the_principal(tmp_path: Path) -> None:
    from examples.everything_server import build_server, loopback_security

    stateless = build_server().streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, transport_security=loopback_security()
    )
    async with gateway_stack(tmp_path, upstream_app=stateless) as stack, httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(20):
            async with sdk_client(stack, stack.token(["tools:read"]), mode="legacy") as client:
                echoed = await client.call_tool("echo", {"message": "no upstream session"})
            session = await open_session(http, stack.mcp_url(), stack.token(client="agent-a"))
            hijack = await http.post(
                stack.mcp_url(),
                headers=post_headers(stack.token(client="agent-b"), version=HANDSHAKE, session=session),
                json=call_body("echo", {"message": "hijack"}),
            )
    assert echoed.content[0].text == "no upstream session"  # type: ignore[union-attr]
    assert session
    assert hijack.status_code == 404
    assert all("mcp-session-id" not in headers for _, headers, _ in stack.tap.requests)


@pytest.mark.anyio
async def test_sessions_per_principal_are_capped_with_429_before_the_upstream_sees_an_initialize(
    tmp_path: Path,
) -> None:
    audit = MemoryAuditSink()
    extra = "max_sessions_per_principal = 2\n"
    async with (
        gateway_stack(tmp_path, audit=audit, gateway_extra=extra) as stack,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        alice, bob = stack.token(client="agent-a"), stack.token(client="agent-b")
        with anyio.fail_after(20):
            first = await open_session(http, stack.mcp_url(), alice)
            await open_session(http, stack.mcp_url(), alice)
            initializes = len(stack.tap.calls("initialize"))
            refused = await http.post(stack.mcp_url(), headers=post_headers(alice), json=initialize_body())
            assert len(stack.tap.calls("initialize")) == initializes  # nothing forwarded
            await open_session(http, stack.mcp_url(), bob)  # another principal has places of its own
            ended = await http.delete(stack.mcp_url(), headers=post_headers(alice, version=HANDSHAKE, session=first))
            again = await open_session(http, stack.mcp_url(), alice)  # DELETE gave the place back
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert json_error(refused)["code"] == -32029
    assert "max_sessions_per_principal" in json_error(refused)["message"]
    assert ended.status_code == 200
    assert again
    assert [(r.event_type, r.agent_id, r.http_status) for r in audit.records if r.http_status == 429] == [
        ("refusal", "agent-a", 429)
    ]


@pytest.mark.anyio
async def test_a_session_older_than_its_max_age_is_404_and_frees_its_place(tmp_path: Path) -> None:
    extra = "max_sessions_per_principal = 1\nsession_max_age_seconds = 2\n"
    async with gateway_stack(tmp_path, gateway_extra=extra) as stack, httpx2.AsyncClient(timeout=10) as http:
        token = stack.token()
        with anyio.fail_after(20):
            session = await open_session(http, stack.mcp_url(), token)
            headers = post_headers(token, version=HANDSHAKE, session=session)
            fresh = await http.post(stack.mcp_url(), headers=headers, json=call_body("echo", {"message": "now"}))
            await anyio.sleep(2.2)
            forwarded = len(stack.tap.requests)
            stale = await http.post(stack.mcp_url(), headers=headers, json=call_body("echo", {"message": "later"}))
            assert len(stack.tap.requests) == forwarded
            replacement = await open_session(http, stack.mcp_url(), token)
    assert fresh.status_code == 200
    assert stale.status_code == 404
    assert "expired" in json_error(stale)["message"]
    assert replacement != session


@pytest.mark.anyio
async def test_a_refused_session_id_is_audited_by_its_hash_never_as_presented(
    stack: Stack, http: httpx2.AsyncClient
) -> None:
    # SECURITY.md "identity values are printable": a session id that does not open is client text; the
    # refusal's record names it by SHA-256, so no control character or bidi override reaches the log.
    audit: WatchedAuditSink = stack.extra["audit"]
    hostile = "abc\x9b31m\u202edef"  # C1 CSI and a right-to-left override, as latin-1 header bytes allow
    raw = hostile.encode("utf-8").decode("latin-1")
    headers = post_headers(stack.token(), version=HANDSHAKE, session="placeholder")
    headers["mcp-session-id"] = raw
    forwarded = len(stack.tap.requests)
    with anyio.fail_after(10):
        response = await http.post(
            stack.mcp_url(),
            headers={k: v.encode("latin-1") for k, v in headers.items()},
            json=call_body("echo", {"message": "x"}, 9, _meta={"request_context": "hostile-session-id"}),
        )
        (record,) = await audit.wait_for(lambda r: r.request_context == "hostile-session-id")
    assert response.status_code == 404
    assert len(stack.tap.requests) == forwarded
    expected = "sha256:" + hashlib.sha256(raw.encode("latin-1")).hexdigest()
    assert record.session_id == expected
