"""Judging each upstream message: shape, ids, list filtering, server requests, secrets."""

from __future__ import annotations

import json
from typing import Any

from mcp_gateway.config import ServerEntry
from mcp_gateway.policy.decision import ServerPolicy
from mcp_gateway.policy.scopes import ScopeHierarchy
from mcp_gateway.proxy.relay import StreamState, UpstreamMessageJudge
from mcp_gateway.proxy.server_request_ids import ServerRequestIdSealer
from mcp_gateway.proxy.sessions import SessionClaims

ENTRY = ServerEntry(
    name="everything",
    url="http://127.0.0.1:1/mcp",
    default_scopes=("tools:call",),
    tool_scopes={"echo": ("tools:read",), "delete_everything": ("admin",)},
    server_requests=("elicitation",),
    hide_step_up=True,
)
SECRET = b"upstream-secret-value"


SESSION = SessionClaims("everything", "upstream-session", "f" * 64, 1_700_000_000)
SERVER_REQUEST_IDS = ServerRequestIdSealer(bytes(32)).bound(SESSION)


def judge(*, handshake: bool = True, granted: frozenset[str] = frozenset({"tools:read"})) -> UpstreamMessageJudge:
    policy = ServerPolicy.from_entry(ENTRY, ScopeHierarchy({}))
    return UpstreamMessageJudge(
        policy,
        granted,
        governs_server_requests=handshake,
        secrets=(SECRET,),
        server_request_ids=SERVER_REQUEST_IDS if handshake else None,
    )


def raw(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def test_the_answer_to_the_clients_request_is_relayed_and_recorded() -> None:
    state = StreamState(request_id=4, request_method="tools/call")
    data = raw({"jsonrpc": "2.0", "id": 4, "result": {"content": [], "isError": True}})
    assert judge().judge(data, state) == data
    assert (state.answered, state.outcome) == (True, "tool_error")


def test_a_second_answer_and_answers_to_other_ids_are_dropped() -> None:
    state = StreamState(request_id=4)
    verdicts = [
        judge().judge(raw({"jsonrpc": "2.0", "id": 5, "result": {}}), state),
        judge().judge(raw({"jsonrpc": "2.0", "id": "4", "result": {}}), state),
        judge().judge(raw({"jsonrpc": "2.0", "id": 4, "result": {}}), state),
        judge().judge(raw({"jsonrpc": "2.0", "id": 4, "result": {"again": True}}), state),
    ]
    assert [v is not None for v in verdicts] == [False, False, True, False]
    assert state.garbage == 3


def test_garbage_is_counted_and_dropped() -> None:
    state = StreamState(request_id=1)
    for data in [b"not json", b"[1]", raw({"jsonrpc": "1.0", "id": 1, "result": {}}), raw({"jsonrpc": "2.0", "id": 1})]:
        assert judge().judge(data, state) is None
    assert judge().judge(raw({"jsonrpc": "2.0", "method": 5}), state) is None
    assert (state.garbage, state.answered) == (5, False)


def test_standalone_stream_drops_responses_but_a_resumed_one_relays_them() -> None:
    response = raw({"jsonrpc": "2.0", "id": 9, "result": {}})
    assert judge().judge(response, StreamState()) is None
    assert judge().judge(response, StreamState(resumed=True)) == response


def test_list_result_is_filtered_by_the_tokens_scopes() -> None:
    tools = [{"name": "echo"}, {"name": "delete_everything"}, {"name": "other"}]
    out = judge().judge(raw({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}), StreamState(request_id=1))
    assert out is not None
    assert [t["name"] for t in json.loads(out)["result"]["tools"]] == ["echo"]


def test_list_result_replayed_on_a_resumed_stream_is_filtered_by_its_shape() -> None:
    tools = [{"name": "echo"}, {"name": "delete_everything"}]
    out = judge().judge(raw({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}), StreamState(resumed=True))
    assert out is not None
    assert [t["name"] for t in json.loads(out)["result"]["tools"]] == ["echo"]


def test_refused_server_request_is_set_aside_for_the_gateway_to_answer() -> None:
    state = StreamState(request_id=1)
    sampling = raw({"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage", "params": {}})
    elicitation = raw({"jsonrpc": "2.0", "id": 1, "method": "elicitation/create", "params": {}})
    assert judge().judge(sampling, state) is None
    relayed = judge().judge(elicitation, state)
    assert relayed is not None
    # Issue 11: the client sees a tag bound to the session in place of the upstream's id; it opens to the id.
    tagged = json.loads(relayed)
    assert tagged["id"] != 1 and tagged["id"].startswith("mcpgw-")
    assert SERVER_REQUEST_IDS.open(tagged["id"]) == 1
    assert {**tagged, "id": 1} == json.loads(elicitation)
    assert state.rejected_server_requests == [(0, "sampling/createMessage")]


def test_server_request_with_no_session_to_bind_its_id_to_is_answered_by_the_gateway() -> None:
    state = StreamState(request_id=1)
    elicitation = raw({"jsonrpc": "2.0", "id": 1, "method": "elicitation/create", "params": {}})
    unbound = judge()
    unbound.server_request_ids = None
    assert unbound.judge(elicitation, state) is None
    assert state.rejected_server_requests == [(1, "elicitation/create")]


def test_server_request_whose_id_is_neither_string_nor_integer_is_dropped() -> None:
    state = StreamState(request_id=1)
    for bad in [None, True, 1.5, {"x": 1}, [1]]:
        message = raw({"jsonrpc": "2.0", "id": bad, "method": "elicitation/create", "params": {}})
        assert judge().judge(message, state) is None
    assert (state.garbage, state.rejected_server_requests) == (5, [])


def test_server_request_on_a_2026_07_28_stream_is_dropped() -> None:
    state = StreamState(request_id=1)
    elicitation = raw({"jsonrpc": "2.0", "id": 1, "method": "elicitation/create", "params": {}})
    assert judge(handshake=False).judge(elicitation, state) is None
    assert (state.garbage, state.rejected_server_requests) == (1, [])


def test_notifications_are_relayed_in_both_eras() -> None:
    progress = raw({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
    assert judge().judge(progress, StreamState(request_id=1)) == progress
    assert judge(handshake=False).judge(progress, StreamState(request_id=1)) == progress


def test_input_required_result_asking_for_a_refused_request_becomes_an_error() -> None:
    state = StreamState(request_id=2)
    result = {
        "resultType": "input_required",
        "inputRequests": {"ask": {"method": "elicitation/create"}, "sample": {"method": "sampling/createMessage"}},
    }
    out = judge(handshake=False).judge(raw({"jsonrpc": "2.0", "id": 2, "result": result}), state)
    assert out is not None
    assert json.loads(out) == {
        "jsonrpc": "2.0",
        "id": 2,
        "error": {"code": -32600, "message": "sampling/createMessage is not permitted by the gateway"},
    }
    assert (state.answered, state.outcome) == (True, "server_request_refused")


def test_input_required_result_asking_only_for_permitted_requests_is_relayed() -> None:
    data = raw({"jsonrpc": "2.0", "id": 2, "result": {"inputRequests": {"ask": {"method": "elicitation/create"}}}})
    assert judge(handshake=False).judge(data, StreamState(request_id=2)) == data


def test_malformed_input_requests_are_refused() -> None:
    data = raw({"jsonrpc": "2.0", "id": 2, "result": {"inputRequests": ["elicitation/create"]}})
    out = judge(handshake=False).judge(data, StreamState(request_id=2))
    assert out is not None
    assert json.loads(out)["error"]["message"] == "an input request is not permitted by the gateway"


def test_upstream_credential_echoed_in_a_message_is_redacted() -> None:
    data = raw({"jsonrpc": "2.0", "id": 1, "result": {"text": f"Bearer {SECRET.decode()}"}})
    out = judge().judge(data, StreamState(request_id=1))
    assert out is not None
    assert json.loads(out)["result"]["text"] == "Bearer [REDACTED]"
