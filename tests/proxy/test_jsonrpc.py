"""Parsing and classifying what a client POSTs, without trusting its shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_gateway.errors import ProtocolRejected
from mcp_gateway.proxy.jsonrpc import MAX_DEPTH, ClientMessage, classify, error_body, parse_json, require_target


def _rejected(value: Any) -> ProtocolRejected:
    with pytest.raises(ProtocolRejected) as raised:
        classify(value)
    return raised.value


def test_tool_call_is_classified_with_its_name_arguments_and_stated_reason() -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "hi"}, "_meta": {"request_context": "user asked"}},
    }
    assert classify(body) == ClientMessage("request", body, "tools/call", 3, "echo", {"message": "hi"}, "user asked")


def test_resource_read_is_named_by_its_uri() -> None:
    message = classify({"jsonrpc": "2.0", "id": "r", "method": "resources/read", "params": {"uri": "file:///a"}})
    assert (message.kind, message.name, message.arguments) == ("request", "file:///a", None)


def test_message_without_id_is_a_notification() -> None:
    assert classify({"jsonrpc": "2.0", "method": "notifications/initialized"}).kind == "notification"


def test_result_or_error_with_id_is_a_response() -> None:
    assert classify({"jsonrpc": "2.0", "id": 1, "result": {}}).kind == "response"
    assert classify({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "m"}}).kind == "response"


def test_batch_is_refused() -> None:
    assert _rejected([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).message == (
        "Invalid Request: JSON-RPC batches are not supported"
    )


@pytest.mark.parametrize(
    "value",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"id": 1, "method": "ping"},
        "ping",
        None,
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}},
    ],
)
def test_anything_but_a_json_rpc_2_object_is_an_invalid_request(value: Any) -> None:
    assert _rejected(value).jsonrpc_code == -32600


@pytest.mark.parametrize("msg_id", [None, True, 1.5, [1], {"a": 1}])
def test_request_id_must_be_a_string_or_an_integer(msg_id: Any) -> None:
    assert _rejected({"jsonrpc": "2.0", "id": msg_id, "method": "ping"}).message == (
        "Invalid Request: id must be a string or an integer"
    )


@pytest.mark.parametrize("method", ["", 5, None])
def test_method_must_be_a_non_empty_string(method: Any) -> None:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if method is None:
        body["params"] = {}
    assert _rejected(body).jsonrpc_code == -32600


def test_params_must_be_an_object() -> None:
    assert _rejected({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}).jsonrpc_code == -32602


@pytest.mark.parametrize("name", [None, "", 7, ["echo"]])
def test_tool_call_without_a_string_name_is_invalid_params(name: Any) -> None:
    message = classify({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
    assert message.name is None
    with pytest.raises(ProtocolRejected) as raised:
        require_target(message)
    assert (raised.value.jsonrpc_code, raised.value.message) == (
        -32602,
        "Invalid params: tools/call needs a string params.name",
    )


def test_named_notification_and_unnamed_methods_need_no_target() -> None:
    require_target(classify({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
    require_target(classify({"jsonrpc": "2.0", "method": "tools/call"}))


def test_non_string_request_context_is_ignored() -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": {"request_context": {"x": 1}}}}
    assert classify(body).request_context is None


def test_json_nested_at_the_limit_parses() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000])
def test_json_nested_past_the_limit_is_a_parse_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(ProtocolRejected) as raised:
        parse_json(b'{"a":' * depth + b"1" + b"}" * depth)
    assert raised.value.jsonrpc_code == -32700


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"NaN", b'{"a": Infinity}', b"", b"1" * 5000])
def test_malformed_json_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ProtocolRejected) as raised:
        parse_json(raw)
    assert raised.value.jsonrpc_code == -32700


def test_error_body_is_compact_json_rpc() -> None:
    assert json.loads(error_body(4, -32600, "no", {"k": 1})) == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32600, "message": "no", "data": {"k": 1}},
    }
    assert b" " not in error_body(None, -32603, "x")
