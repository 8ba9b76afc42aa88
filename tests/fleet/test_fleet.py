"""Two replicas behind a round-robin balancer, one PostgreSQL audit log and one Redis: they act as one gateway.

Every request goes over a new connection, so the balancer really spreads one client's session, one agent's
burst and one storm over both replicas. Tests run in file order on one fleet; the storm, which kills a
replica, comes last. Timings and counts are printed (`pytest -s`) for the scale note in bench/README.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from tests._mcp import HANDSHAKE, modern_headers, open_session, post_headers
from tests.e2e._audit_support import call_tool, json_rows
from tests.proxy._support import Event, call_body, messages_until_response, modern_call_body, read_events

from ._fleet import BURST, Fleet, running_fleet

pytestmark = pytest.mark.anyio

STORM_CALLS = 200
STORM_CLIENTS = 8
KILL_AFTER = 60  # upstream-received storm calls before one replica is SIGKILLed


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    async with running_fleet(tmp_path_factory.mktemp("fleet")) as fleet:
        yield fleet


def _client() -> httpx2.AsyncClient:
    # No keep-alive: each request is a new connection, which the balancer hands to the next replica.
    return httpx2.AsyncClient(timeout=20, limits=httpx2.Limits(max_keepalive_connections=0))


async def _first_message_event(response: httpx2.Response) -> Event:
    async for event in read_events(response):
        if event.data:
            return event
    raise AssertionError("the stream ended without a message")


async def _marked_call(http: httpx2.AsyncClient, fleet: Fleet, marker: str) -> httpx2.Response:
    """A stateless echo of `marker`, which is also its request_context, by an agent of its own."""
    return await call_tool(http, fleet.url, fleet.token(), "echo", {"message": marker}, reason=marker)


def _received(fleet: Fleet, prefix: str) -> list[str]:
    """Markers starting with `prefix` in the tools/call requests the upstream received."""
    messages = [call["params"].get("arguments", {}).get("message", "") for call in fleet.upstream.calls("tools/call")]
    return [m for m in messages if isinstance(m, str) and m.startswith(prefix)]


async def _intents(fleet: Fleet, prefix: str) -> dict[str, str]:
    """request_context → chain_id of the intent records in PostgreSQL whose request_context starts with `prefix`."""
    rows = await fleet.sql(
        "SELECT record::json->>'request_context', chain_id FROM audit_records WHERE phase = 'intent' "
        "AND record::json->>'request_context' LIKE $1",
        prefix + "%",
    )
    return {context: chain for context, chain in rows}


async def _chain_of(fleet: Fleet, replica: int) -> str:
    pid = fleet.replicas[replica].pid
    rows = await fleet.sql("SELECT chain_id FROM audit_chains WHERE writer LIKE $1", f"%:{pid}")
    assert len(rows) == 1, rows
    return str(rows[0][0])


async def test_a_session_initialized_through_one_replica_is_served_by_the_other_and_resumed_on_the_first(
    fleet: Fleet,
) -> None:
    token = fleet.token()
    served = len(fleet.balancer.served)
    with anyio.fail_after(30):
        async with _client() as http:
            try:
                fleet.balancer.pin(0)
                session = await open_session(http, fleet.url, token)  # initialize and initialized on A
                headers = post_headers(token, version=HANDSHAKE, session=session)
                fleet.balancer.pin(1)
                on_b = await http.post(fleet.url, headers=headers, json=call_body("echo", {"message": "on-b"}))
                assert on_b.status_code == 200, on_b.text
                assert "on-b" in on_b.text
                # B serves a progress stream; the client drops it after the first event...
                stream = call_body("emit_progress", {"steps": 4}, request_id=3, _meta={"progressToken": "fleet"})
                async with http.stream("POST", fleet.url, headers=headers, json=stream) as response:
                    first = await _first_message_event(response)
                assert first.id is not None
                # ...and resumes it on A, which never saw the stream, with the event id B relayed.
                fleet.balancer.pin(0)
                resume = {**headers, "accept": "text/event-stream", "last-event-id": first.id}
                async with http.stream("GET", fleet.url, headers=resume) as resumed:
                    assert resumed.status_code == 200
                    rest = await messages_until_response(resumed, 3)
            finally:
                fleet.balancer.pin(None)
            # Unpinned, the balancer alternates, and either replica serves the session.
            for n in range(4):
                body = call_body("echo", {"message": f"rr-{n}"}, request_id=10 + n)
                answer = await http.post(fleet.url, headers=headers, json=body)
                assert answer.status_code == 200, answer.text
    assert fleet.balancer.served[served : served + 5] == [0, 0, 1, 1, 0]
    assert set(fleet.balancer.served[served + 5 :]) == {0, 1}
    assert first.message()["params"]["progress"] == 1
    assert [m["params"]["progress"] for m in rest[:-1]] == [2, 3, 4]
    assert rest[-1]["result"]["content"][0]["text"] == "emitted 4 progress notifications"


async def test_one_agents_burst_holds_across_both_replicas_together(fleet: Fleet) -> None:
    token = fleet.token()
    served = len(fleet.balancer.served)
    with anyio.fail_after(30):
        async with _client() as http:
            statuses = []
            for n in range(BURST + 1):
                body = modern_call_body("echo", {"message": f"burst-{n}"}, request_id=n + 1)
                response = await http.post(fleet.url, headers=modern_headers(token, "tools/call", "echo"), json=body)
                statuses.append(response.status_code)
    assert statuses == [200] * BURST + [429]  # one bucket in Redis, though each replica served half the calls
    spread = fleet.balancer.served[served:]
    assert sorted([spread.count(0), spread.count(1)]) == [BURST // 2, BURST // 2 + 1]
    assert len(_received(fleet, "burst-")) == BURST


async def test_both_replicas_records_are_in_one_query_and_an_edited_row_in_either_chain_is_found(
    fleet: Fleet,
) -> None:
    markers = [f"audit-{n}-{time.monotonic_ns()}" for n in range(4)]
    with anyio.fail_after(60):
        async with _client() as http:
            for marker in markers:
                assert (await _marked_call(http, fleet, marker)).status_code == 200
        chains = [await _chain_of(fleet, 0), await _chain_of(fleet, 1)]

        query = await fleet.cli("audit", "query", "--format", "json")
        assert query.returncode == 0, query.stderr
        rows = {row["request_context"]: row for row in json_rows(query.stdout.decode())}
        assert set(markers) <= set(rows)
        intents = await _intents(fleet, "audit-")
        assert {intents[m] for m in markers} == set(chains)  # one query, two writers
        assert all(rows[m]["decision"] == "allow" and rows[m]["tool"] == "echo" for m in markers)

        intact = await fleet.cli("audit", "verify")
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert all(f"chain {chain}: intact" in intact.stdout.decode() for chain in chains)

        for chain in chains:
            marker = next(m for m in markers if intents[m] == chain)
            [(seq, original)] = await fleet.sql(
                "SELECT seq, record FROM audit_records WHERE chain_id = $1 AND phase = 'intent' "
                "AND record::json->>'request_context' = $2",
                chain,
                marker,
            )
            edited = original.replace(marker, marker.upper())
            await fleet.sql("UPDATE audit_records SET record = $1 WHERE chain_id = $2 AND seq = $3", edited, chain, seq)
            try:
                broken = await fleet.cli("audit", "verify")
            finally:
                await fleet.sql(
                    "UPDATE audit_records SET record = $1 WHERE chain_id = $2 AND seq = $3", original, chain, seq
                )
            out = broken.stdout.decode()
            assert broken.returncode == 1, out
            assert f"chain {chain}: BROKEN at seq {seq}:" in out
            other = next(c for c in chains if c != chain)
            assert f"chain {other}: intact" in out

        restored = await fleet.cli("audit", "verify")
        assert restored.returncode == 0, restored.stdout


async def _status(http: httpx2.AsyncClient, fleet: Fleet, marker: str) -> tuple[int, float]:
    started = time.monotonic()
    response = await _marked_call(http, fleet, marker)
    return response.status_code, time.monotonic() - started


async def _until_served(http: httpx2.AsyncClient, fleet: Fleet, prefix: str) -> tuple[float, list[int]]:
    """Calls (each with a marker of its own) until one is answered 200; the time that took and every status."""
    started = time.monotonic()
    statuses: list[int] = []
    while not statuses or statuses[-1] != 200:
        status, _ = await _status(http, fleet, f"{prefix}-{len(statuses)}")
        statuses.append(status)
        if status != 200:
            assert status == 503, status
            await anyio.sleep(0.1)  # a client's retry interval: the gateway gives no other signal
    return time.monotonic() - started, statuses


async def test_postgresql_unreachable_from_one_replica_gets_503_forwards_nothing_and_heals_by_itself(
    fleet: Fleet,
) -> None:
    door = fleet.doors[1]
    timings: dict[str, Any] = {}
    async with _client() as http, httpx2.AsyncClient(timeout=5) as probe:
        try:
            fleet.balancer.pin(1)
            with anyio.fail_after(20):
                assert (await _status(http, fleet, "outage-warm"))[0] == 200

                # A path to PostgreSQL that accepts and never answers: the intent cannot be committed.
                door.hang()
                first, second = await _concurrently(
                    _status(http, fleet, "outage-hang-0"), _status(http, fleet, "outage-hang-1")
                )
                assert (first[0], second[0]) == (503, 503)
                timings["hang: 503 after s"] = (round(first[1], 2), round(second[1], 2))
                fast = await _status(http, fleet, "outage-hang-2")
                timings["hang: next call 503 after s"] = round(fast[1], 2)
                assert fast[0] == 503
                assert (await probe.get(f"{fleet.replicas[1].base_url}/readyz")).status_code == 503
                fleet.balancer.pin(0)  # the other replica's path is fine: it keeps serving
                assert (await _status(http, fleet, "outage-on-a"))[0] == 200
                fleet.balancer.pin(1)
            assert _received(fleet, "outage-hang") == []

            door.forward()
            with anyio.fail_after(15):
                timings["hang: healed after s"], statuses = await _until_served(http, fleet, "outage-heal")
            timings["hang: statuses while healing"] = statuses
            assert (await probe.get(f"{fleet.replicas[1].base_url}/readyz")).status_code == 200

            # Connections reset and refused (a database restarting): 503 at once, and back once it is up.
            with anyio.fail_after(20):
                door.drop()
                dropped = await _status(http, fleet, "outage-drop-0")
                assert dropped[0] == 503
                timings["drop: 503 after s"] = round(dropped[1], 2)
                door.forward()
                timings["drop: healed after s"], statuses = await _until_served(http, fleet, "outage-drop-heal")
            assert _received(fleet, "outage-drop-0") == []

            # The database ends the gateways' own connections (pg_terminate_backend): the next calls heal.
            with anyio.fail_after(20):
                ports = [port for d in fleet.doors for port in d.server_side_ports()]
                assert len(ports) == 2, ports  # one writer connection per replica
                terminated = await fleet.sql(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE client_port = ANY($1::int[])",
                    ports,
                )
                assert terminated == [(True,), (True,)]
                while set(ports) & {port for d in fleet.doors for port in d.server_side_ports()}:
                    await anyio.sleep(0.01)  # the doors see the server close those (a writer may open a new one)
                for replica in (0, 1):
                    fleet.balancer.pin(replica)
                    healed = await _status(http, fleet, f"outage-terminated-{replica}")
                    timings[f"terminate: replica {replica} next call"] = healed
                    assert healed[0] == 200
        finally:
            door.forward()
            fleet.balancer.pin(None)
    intents = await _intents(fleet, "outage-")
    # Everything the upstream received had its intent committed first; nothing refused reached it.
    assert set(_received(fleet, "outage-")) <= set(intents)
    print(f"\nPostgreSQL outage timings (replica 1): {json.dumps(timings)}")


async def _concurrently(*calls: Any) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Any) -> None:
        results[index] = await call

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(run, index, call)
    return results


async def test_every_call_the_upstream_received_has_its_intent_when_a_replica_is_killed_mid_storm(
    fleet: Fleet,
) -> None:
    victim = fleet.replicas[1]
    already = len(fleet.upstream.calls("tools/call"))
    fleet.upstream.on_call("tools/call", already + KILL_AFTER, victim.kill)
    markers = iter(f"storm-{n}" for n in range(STORM_CALLS))
    outcomes: dict[str, str] = {}

    async def client() -> None:
        async with _client() as http:
            for marker in markers:
                try:
                    outcomes[marker] = str((await _marked_call(http, fleet, marker)).status_code)
                except httpx2.TransportError as exc:
                    outcomes[marker] = type(exc).__name__

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for _ in range(STORM_CLIENTS):
                tg.start_soon(client)
        assert victim.process is not None
        await victim.process.wait()
        received = _received(fleet, "storm-")
        intents = await _intents(fleet, "storm-")
        verify = await fleet.cli("audit", "verify")

    assert victim.process.returncode == -9
    missing = sorted(set(received) - set(intents))
    assert missing == []  # durable before forwarded, whichever replica forwarded it and even if it then died
    assert {m for m, status in outcomes.items() if status == "200"} <= set(received)
    assert verify.returncode == 0, verify.stdout  # the killed writer's chain ends at its last commit, intact
    counts: dict[str, int] = {}
    for status in outcomes.values():
        counts[status] = counts.get(status, 0) + 1
    # Only calls in flight on the victim fail (one per client, or two if a client reconnected to it in the
    # moment it took to die); the surviving replica serves everything after.
    assert STORM_CALLS - counts.get("200", 0) <= 2 * STORM_CLIENTS, counts
    print(
        f"\nSIGKILL storm: {STORM_CALLS} calls from {STORM_CLIENTS} clients, replica 1 killed at the "
        f"{KILL_AFTER}th upstream call; client results {counts}; upstream received {len(received)}; intents "
        f"recorded {len(intents)} (of them never forwarded: {len(set(intents) - set(received))}); "
        f"received without an intent: {len(missing)}"
    )
