"""Handshake-era streams dropped by the client: nothing is cancelled and Last-Event-ID gets the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from tests._mcp import HANDSHAKE, initialize_body, open_session, post_headers
from tests._stack import Stack, gateway_stack
from tests.proxy._support import Event, call_body, messages_until_response, read_events, spellings_of_the_same_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with gateway_stack(tmp_path_factory.mktemp("resumption")) as stack:
        yield stack


async def _first_message_event(response: httpx2.Response) -> Event:
    async for event in read_events(response):
        if event.data:
            return event
    raise AssertionError("the stream ended without a message")


def _resume_headers(token: str, session: str, last_event_id: str) -> dict[str, str]:
    return {
        **post_headers(token, version=HANDSHAKE, session=session),
        "accept": "text/event-stream",
        "last-event-id": last_event_id,
    }


async def test_dropped_post_stream_is_resumed_with_last_event_id(stack: Stack) -> None:
    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            session = await open_session(http, stack.mcp_url(), token)
            body = call_body("emit_progress", {"steps": 4}, request_id=7, _meta={"progressToken": "resume-me"})
            headers = post_headers(token, version=HANDSHAKE, session=session)
            async with http.stream("POST", stack.mcp_url(), headers=headers, json=body) as response:
                first = await _first_message_event(response)
            # The connection is gone mid-stream; the client comes back for the rest.
            assert first.id is not None
            async with http.stream(
                "GET", stack.mcp_url(), headers=_resume_headers(token, session, first.id)
            ) as resumed:
                assert resumed.status_code == 200
                rest = await messages_until_response(resumed, 7)
    assert first.message()["params"]["progress"] == 1
    assert [m["params"]["progress"] for m in rest[:-1]] == [2, 3, 4]
    assert rest[-1]["result"]["content"][0]["text"] == "emitted 4 progress notifications"


async def test_dropping_a_handshake_stream_does_not_cancel_the_upstream_call(stack: Stack) -> None:
    # ask_model blocks upstream until the client answers its sampling request: the client drops the
    # stream while the call is in flight, answers, and resumes to collect the tool's result.
    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            session = await open_session(http, stack.mcp_url(), token)
            headers = post_headers(token, version=HANDSHAKE, session=session)
            body = call_body("ask_model", {"prompt": "still there?"}, request_id=9)
            async with http.stream("POST", stack.mcp_url(), headers=headers, json=body) as response:
                sampling = await _first_message_event(response)
            request: dict[str, Any] = sampling.message()
            assert request["method"] == "sampling/createMessage"
            answer = {
                "jsonrpc": "2.0",
                "id": request["id"],
                "result": {"role": "assistant", "content": {"type": "text", "text": "yes"}, "model": "m"},
            }
            accepted = await http.post(stack.mcp_url(), headers=headers, json=answer)
            assert accepted.status_code == 202
            assert sampling.id is not None
            async with http.stream(
                "GET", stack.mcp_url(), headers=_resume_headers(token, session, sampling.id)
            ) as resumed:
                rest = await messages_until_response(resumed, 9)
    assert rest[-1]["result"]["content"][0]["text"] == "model said: yes"


async def test_protocol_2025_06_18_session_is_served_too(stack: Stack) -> None:
    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            response = await http.post(
                stack.mcp_url(), headers=post_headers(token), json=initialize_body(version="2025-06-18")
            )
            session = response.headers["mcp-session-id"]
            headers = post_headers(token, version="2025-06-18", session=session)
            notified = await http.post(
                stack.mcp_url(), headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
            )
            async with http.stream(
                "POST", stack.mcp_url(), headers=headers, json=call_body("echo", {"message": "old"}, request_id=3)
            ) as called:
                messages = await messages_until_response(called, 3)
    assert response.status_code == 200
    assert notified.status_code == 202
    assert messages[-1]["result"]["content"][0]["text"] == "old"


async def _alice_answered(
    http: httpx2.AsyncClient, stack: Stack, alice: str, bob: str, message: str
) -> tuple[str, str, str]:
    """Sessions for Alice and Bob, then Alice echoes `message` as request 2: (her session, his, its first event id)."""
    alice_session = await open_session(http, stack.mcp_url(), alice)
    bob_session = await open_session(http, stack.mcp_url(), bob)
    answered = await http.post(
        stack.mcp_url(),
        headers=post_headers(alice, version=HANDSHAKE, session=alice_session),
        json=call_body("echo", {"message": message}, request_id=2),
    )
    first_id = next(line for line in answered.text.splitlines() if line.startswith("id: "))[4:]
    return alice_session, bob_session, first_id


async def test_another_principal_cannot_resume_a_stream_with_an_event_id_it_saw_or_guessed(stack: Stack) -> None:
    # The example upstream keeps one event store for all sessions and numbers events 1, 2, 3...: without
    # the gateway's tag, Bob could replay Alice's answers by sending her (or a guessed) event id.
    alice, bob = stack.token(client="agent-a"), stack.token(client="agent-b")
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            _, bob_session, first_id = await _alice_answered(http, stack, alice, bob, "alice's secret")
            forwarded = len(stack.tap.requests)
            attempts = [
                await http.get(stack.mcp_url(), headers=_resume_headers(bob, bob_session, candidate))
                for candidate in (first_id, first_id.rpartition(".")[0], "1")
            ]
    assert [a.status_code for a in attempts] == [400, 400, 400]
    assert all("alice's secret" not in a.text for a in attempts)
    assert len(stack.tap.requests) == forwarded


async def test_non_canonical_last_event_id_spelling_was_not_issued_in_this_session(stack: Stack) -> None:
    # SECURITY.md "Identifiers the gateway issues have one accepted spelling": the relayed event id's tag
    # spelt another way (standard alphabet, padding, a space) is an id this session was never given.
    token = stack.token()
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(30):
            session = await open_session(http, stack.mcp_url(), token)
            for request_id in range(2, 60):  # until a tag holds - or _, so the standard spelling differs
                answered = await http.post(
                    stack.mcp_url(),
                    headers=post_headers(token, version=HANDSHAKE, session=session),
                    json=call_body("echo", {"message": "mine"}, request_id=request_id),
                )
                event_id = next(line for line in answered.text.splitlines() if line.startswith("id: "))[4:]
                if "-" in event_id.rpartition(".")[2] or "_" in event_id.rpartition(".")[2]:
                    break
            upstream_id, _, tag = event_id.rpartition(".")
            variants = {
                kind: f"{upstream_id}.{variant}"
                for kind, variant in spellings_of_the_same_bytes(tag).items()
                if variant.isascii() and variant.isprintable() and variant == variant.strip()
            }
            assert {"extra-padding", "standard-alphabet", "space-inside"} <= variants.keys()
            forwarded = len(stack.tap.requests)
            attempts = {
                kind: await http.get(stack.mcp_url(), headers=_resume_headers(token, session, variant))
                for kind, variant in variants.items()
            }
            refused_forwarded = len(stack.tap.requests)
            async with http.stream("GET", stack.mcp_url(), headers=_resume_headers(token, session, event_id)) as same:
                canonical_status = same.status_code
    assert {kind: a.status_code for kind, a in attempts.items()} == dict.fromkeys(variants, 400)
    assert all(
        a.json()["error"]["message"] == "Bad Request: Last-Event-ID was not issued in this session"
        for a in attempts.values()
    )
    assert refused_forwarded == forwarded
    assert canonical_status == 200  # the id as it was relayed still resumes


async def test_resumed_stream_ends_with_its_response_before_other_sessions_replayed_events(stack: Stack) -> None:
    # The example upstream's event store files events by request id across sessions: resuming Alice's
    # request 2 replays Bob's request 2 too. The gateway ends a resumed stream at its response.
    alice, bob = stack.token(client="agent-a"), stack.token(client="agent-b")
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(10):
            alice_session, bob_session, priming_id = await _alice_answered(http, stack, alice, bob, "alice's answer")
            await http.post(
                stack.mcp_url(),
                headers=post_headers(bob, version=HANDSHAKE, session=bob_session),
                json=call_body("echo", {"message": "bob's secret"}, request_id=2),
            )
            async with http.stream(
                "GET", stack.mcp_url(), headers=_resume_headers(alice, alice_session, priming_id)
            ) as resumed:
                replayed = (await resumed.aread()).decode()
    assert "alice's answer" in replayed
    assert "bob's secret" not in replayed
