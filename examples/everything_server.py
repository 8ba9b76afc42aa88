"""An upstream MCP server with every fixture the conformance suite and the gateway's own tests exercise.

One endpoint, ``/mcp``, serves both protocol eras: the 2025-06-18/2025-11-25 initialize handshake (sessions,
standalone GET stream, resumption via ``Last-Event-ID``) and the stateless 2026-07-28 revision. The tools named
``test_*``, the ``test://`` resources and the ``test_*`` prompts are the fixtures that the server scenarios of
``@modelcontextprotocol/conformance`` call by name. The others are for the gateway:

- ``echo(message)`` returns ``message`` (the benchmark's tool);
- ``emit_progress(steps)`` sends ``steps`` progress notifications, then returns;
- ``ask_model(prompt)`` asks the client to sample, ``ask_user(question)`` asks it to elicit, in either era
  (a server-to-client request on handshake connections, an input-required result at 2026-07-28);
- ``delete_everything()`` is marked destructive and deletes nothing (for scope tests);
- ``show_request_headers()`` returns the HTTP headers this server received (to check what a proxy forwards);
- ``whoami()`` returns who the bearer token says is calling: ``sub``, ``act``, scopes, audience and issuer.

With ``--resource URL --trust ISSUER=JWKS_URI`` (repeatable) the server is an OAuth resource server (the SDK's
``mcp.server.auth`` support): it accepts only JWTs from a trusted issuer whose ``aud`` is its own URL, so a
token issued for another server is refused with 401.

Run it with ``python examples/everything_server.py [--host H] [--port P]``; tests use ``build_app()``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
import httpx2
import jwt
import uvicorn
from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, JsonValue
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_SILENT = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

_T = TypeVar("_T")


class InMemoryEventStore(EventStore):
    """Keeps the newest ``max_events`` SSE events so a handshake-era client can resume with ``Last-Event-ID``."""

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: collections.deque[tuple[str, int, JSONRPCMessage | None]] = collections.deque(maxlen=max_events)
        self._last_id = 0

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._last_id += 1
        self._events.append((stream_id, self._last_id, message))
        return str(self._last_id)

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        after = int(last_event_id) if last_event_id.isdigit() else -1
        stream = next((s for s, event_id, _ in self._events if event_id == after), None)
        if stream is None:
            return None
        # Replay only the stream the event belongs to: another stream's messages must never leak into this one.
        for s, event_id, message in list(self._events):
            if s == stream and event_id > after and message is not None:  # None marks a priming event
                await send_callback(EventMessage(message, str(event_id)))
        return stream


def _is_stateless(ctx: Context) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _undeprecated(call: Callable[[], Awaitable[_T]]) -> Awaitable[_T]:
    """Start a call to an API that SEP-2577 deprecated (logging, sampling) without the SDK's warning.

    Handshake-era clients still use these features. The warning fires when the coroutine is created,
    so nothing is awaited inside the filter and no other task can observe the changed filters.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return call()


async def _log(ctx: Context, message: str) -> None:
    await _undeprecated(lambda: ctx.session.send_log_message("info", message, related_request_id=ctx.request_id))


async def _sample(ctx: Context, prompt: str, max_tokens: int = 100) -> CreateMessageResult:
    messages = [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))]
    # related_request_id puts the request on this call's stream: the standalone GET stream may not be open.
    return await _undeprecated(
        lambda: ctx.session.create_message(messages=messages, max_tokens=max_tokens, related_request_id=ctx.request_id)
    )


def _sampling_request(prompt: str, max_tokens: int = 100) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def _elicitation_request(message: str, field: str) -> ElicitRequest:
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _text_of(answer: object) -> str:
    if isinstance(answer, CreateMessageResult) and answer.content.type == "text":
        return answer.content.text
    return "?"


def _field_of(answer: object, field: str) -> Any:
    return answer.content.get(field) if isinstance(answer, ElicitResult) and answer.content else None


def _require_capability(ctx: Context, name: str) -> None:
    capabilities = ctx.client_capabilities
    if capabilities is None or getattr(capabilities, name) is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message=f"This tool requires the client {name!r} capability",
            data={"requiredCapabilities": {name: {}}},
        )


# Tools for the gateway's tests and benchmark. They are async: the SDK runs a sync tool in a worker thread.


async def echo(message: str) -> str:
    """Return the message unchanged."""
    return message


async def emit_progress(ctx: Context, steps: int = 3) -> str:
    """Send `steps` progress notifications (1/steps ... steps/steps), then return."""
    for step in range(1, steps + 1):
        await ctx.report_progress(progress=step, total=steps, message=f"step {step} of {steps}")
    return f"emitted {steps} progress notifications"


async def ask_model(ctx: Context, prompt: str) -> str | InputRequiredResult:
    """Ask the client's model to answer `prompt` (sampling) and return its answer."""
    _require_capability(ctx, "sampling")
    if not _is_stateless(ctx):
        return f"model said: {_text_of(await _sample(ctx, prompt))}"
    if ctx.input_responses and "answer" in ctx.input_responses:
        return f"model said: {_text_of(ctx.input_responses['answer'])}"
    return InputRequiredResult(input_requests={"answer": _sampling_request(prompt)})


class Answer(BaseModel):
    answer: str = Field(description="The user's answer")


async def ask_user(ctx: Context, question: str) -> str | InputRequiredResult:
    """Ask the user `question` (form elicitation) and return what they did and said."""
    _require_capability(ctx, "elicitation")
    if not _is_stateless(ctx):
        result = await ctx.elicit(message=question, schema=Answer)
        answer = result.data.answer if result.action == "accept" else None
        return f"user action={result.action}, answer={answer}"
    if ctx.input_responses and "answer" in ctx.input_responses:
        response = ctx.input_responses["answer"]
        action = response.action if isinstance(response, ElicitResult) else "?"
        return f"user action={action}, answer={_field_of(response, 'answer')}"
    return InputRequiredResult(input_requests={"answer": _elicitation_request(question, "answer")})


async def delete_everything() -> str:
    """Pretend to delete everything (it deletes nothing): a destructive tool for authorization tests."""
    return "nothing deleted"


async def show_request_headers(ctx: Context) -> str:
    """Return, as JSON, the HTTP request headers this server received for this call."""
    return json.dumps(dict(ctx.headers or {}), sort_keys=True)


async def whoami() -> str:
    """Return, as JSON, who the verified bearer token says is calling (all null when auth is off)."""
    token = get_access_token()
    claims = (token.claims or {}) if token is not None else {}
    return json.dumps(
        {
            "sub": token.subject if token is not None else None,
            "act": claims.get("act"),
            "client_id": token.client_id if token is not None else None,
            "scopes": token.scopes if token is not None else [],
            "aud": claims.get("aud"),
            "iss": claims.get("iss"),
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class ResourceAuth:
    """Makes the server a resource server: JWTs from `issuers` (issuer → JWKS URL) whose `aud` is `resource`."""

    resource: str
    issuers: Mapping[str, str]
    static_tokens: Mapping[str, str] = field(default_factory=dict)  # exact token → client id (for tests)


class JwtVerifier(TokenVerifier):
    """Verifies ES256/RS256 JWTs against each trusted issuer's JWKS (fetched when a `kid` is new)."""

    def __init__(self, auth: ResourceAuth) -> None:
        self.auth = auth
        self._keys: dict[tuple[str, str], Any] = {}

    async def _key(self, issuer: str, kid: str) -> Any:
        if (issuer, kid) not in self._keys:
            async with httpx2.AsyncClient(follow_redirects=False, timeout=10) as http:
                document = (await http.get(self.auth.issuers[issuer])).json()
            for jwk in document.get("keys", []):
                self._keys[(issuer, jwk.get("kid", ""))] = jwt.PyJWK(jwk).key
        return self._keys.get((issuer, kid))

    async def verify_token(self, token: str) -> AccessToken | None:
        static = self.auth.static_tokens.get(token)
        if static is not None:
            return AccessToken(token=token, client_id=static, scopes=[], resource=self.auth.resource)
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            kid = jwt.get_unverified_header(token).get("kid", "")
            if not isinstance(issuer, str) or issuer not in self.auth.issuers:
                return None
            key = await self._key(issuer, kid)
            if key is None:
                return None
            claims = jwt.decode(
                token, key, algorithms=["ES256", "RS256"], audience=self.auth.resource, issuer=issuer,
                options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except (jwt.PyJWTError, httpx2.HTTPError, ValueError, AttributeError):
            return None
        scope = claims.get("scope")
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("sub")),
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=int(claims["exp"]),
            resource=self.auth.resource,
            subject=claims.get("sub"),
            claims=claims,
        )


# Conformance fixtures: tools.


def test_simple_text() -> str:
    """Tests simple text content response"""
    return "This is a simple text response for testing."


def test_image_content() -> list[ImageContent]:
    """Tests image content response"""
    return [ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]


def test_audio_content() -> list[AudioContent]:
    """Tests audio content response"""
    return [AudioContent(type="audio", data=WAV_SILENT, mime_type="audio/wav")]


def test_embedded_resource() -> list[EmbeddedResource]:
    """Tests embedded resource content response"""
    text = "This is an embedded resource content."
    resource = TextResourceContents(uri="test://embedded-resource", mime_type="text/plain", text=text)
    return [EmbeddedResource(type="resource", resource=resource)]


def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Tests response with multiple content types (text, image, resource)"""
    data = '{"test": "data", "value": 123}'
    resource = TextResourceContents(uri="test://mixed-content-resource", mime_type="application/json", text=data)
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=resource),
    ]


async def test_tool_with_logging(ctx: Context) -> str:
    """Tests tool that emits log messages during execution"""
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await _log(ctx, message)
        await anyio.sleep(0.05)  # the scenario asks for ~50 ms between messages
    return "Tool with logging executed successfully"


async def test_tool_with_progress(ctx: Context) -> str:
    """Tests tool that reports progress notifications"""
    for progress in (0, 50, 100):
        await ctx.report_progress(progress=progress, total=100, message=f"Completed step {progress} of 100")
        await anyio.sleep(0.05)  # the scenario asks for ~50 ms between notifications
    meta = ctx.request_context.meta or {}
    return str(meta.get("progress_token", 0))


async def test_sampling(ctx: Context, prompt: str) -> str:
    """Tests server-initiated sampling (LLM completion request)"""
    return f"LLM response: {_text_of(await _sample(ctx, prompt))}"


class UserResponse(BaseModel):
    response: str = Field(description="User's response")


async def test_elicitation(ctx: Context, message: str) -> str:
    """Tests server-initiated elicitation (user input request)"""
    result = await ctx.elicit(message=message, schema=UserResponse)
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"User response: action={result.action}, content={content}"


class DefaultsForm(BaseModel):
    """SEP-1034: a default for every primitive type."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active", description="User status", json_schema_extra={"enum": ["active", "inactive", "pending"]}
    )
    verified: bool = Field(default=True, description="Verification status")


async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Tests elicitation with default values for all primitive types (SEP-1034)"""
    result = await ctx.elicit(message="Please provide user information", schema=DefaultsForm)
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"Elicitation result: action={result.action}, content={content}"


def _titled(*pairs: tuple[str, str]) -> list[JsonValue]:
    return [{"const": const, "title": title} for const, title in pairs]


class EnumsForm(BaseModel):
    """SEP-1330: every enum shape a form may use."""

    untitledSingle: str = Field(
        description="Simple enum without titles", json_schema_extra={"enum": ["active", "inactive", "pending"]}
    )
    titledSingle: str = Field(
        description="Enum with titled options (oneOf)",
        json_schema_extra={
            "oneOf": _titled(("low", "Low Priority"), ("medium", "Medium Priority"), ("high", "High Priority"))
        },
    )
    untitledMulti: list[str] = Field(
        description="Multi-select without titles",
        json_schema_extra={"items": {"type": "string", "enum": ["read", "write", "execute"]}},
    )
    titledMulti: list[str] = Field(
        description="Multi-select with titled options",
        json_schema_extra={
            "items": {"anyOf": _titled(("feature", "New Feature"), ("bug", "Bug Fix"), ("docs", "Documentation"))}
        },
    )
    legacyEnum: str = Field(
        description="Legacy enum with enumNames",
        json_schema_extra={
            "enum": ["small", "medium", "large"],
            "enumNames": ["Small Size", "Medium Size", "Large Size"],
        },
    )


async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Tests elicitation with enum schema variations per SEP-1330"""
    result = await ctx.elicit(message="Please select values using different enum schema types", schema=EnumsForm)
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"Elicitation completed: action={result.action}, content={content}"


def test_error_handling() -> str:
    """Tests error response handling"""
    raise ToolError("This tool intentionally returns an error for testing")  # a result with isError, quietly


def test_x_mcp_header(
    region: Annotated[
        str,
        Field(description="Mirrored into the Mcp-Param-Region header", json_schema_extra={"x-mcp-header": "Region"}),
    ] = "<none>",
) -> str:
    """Tests SEP-2243 Mcp-Param-* server-side validation"""
    return f"region={region}"


def test_missing_capability(ctx: Context) -> str:
    """Fails with a protocol error (-32021) unless the client declared the sampling capability"""
    _require_capability(ctx, "sampling")
    return "Client declared sampling capability; proceeding."


async def test_reconnection(ctx: Context) -> str:
    """Tests SSE polling by closing stream mid-call (SEP-1699)"""
    await _log(ctx, "Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)  # the client reconnects after the 100 ms retry interval
    await _log(ctx, "After reconnect")
    return "Reconnection test completed"


async def test_trigger_tool_change(ctx: Context) -> str:
    """Mutates the tool list and announces it to subscriptions/listen streams (SEP-2575)"""
    ctx.mcp_server.add_tool(lambda: "dynamic", name="test_dynamic_tool", description="dynamic")
    ctx.mcp_server.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    return "tool list changed"


async def test_trigger_prompt_change(ctx: Context) -> str:
    """Mutates the prompt list and announces it to subscriptions/listen streams (SEP-2575)"""
    ctx.mcp_server.add_prompt(
        Prompt.from_function(lambda: "dynamic", name="test_dynamic_prompt", description="dynamic")
    )
    ctx.mcp_server.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    return "prompt list changed"


# SEP-2322 input-required results (2026-07-28): the client answers by retrying with inputResponses.


async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult with a single elicitation request"""
    if ctx.input_responses and "user_name" in ctx.input_responses:
        return f"Hello, {_field_of(ctx.input_responses['user_name'], 'name') or 'stranger'}!"
    return InputRequiredResult(input_requests={"user_name": _elicitation_request("What is your name?", "name")})


async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult with a single sampling request"""
    if ctx.input_responses and "capital_question" in ctx.input_responses:
        return f"Model said: {_text_of(ctx.input_responses['capital_question'])}"
    return InputRequiredResult(input_requests={"capital_question": _sampling_request("What is the capital of France?")})


async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult with a single roots/list request"""
    if ctx.input_responses and "client_roots" in ctx.input_responses:
        answer = ctx.input_responses["client_roots"]
        return f"Client exposed {len(answer.roots) if isinstance(answer, ListRootsResult) else 0} root(s)."
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


def _confirmation_request() -> ElicitRequest:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    return ElicitRequest(params=ElicitRequestFormParams(message="Please confirm", requested_schema=schema))


async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Tests requestState round-tripping in the InputRequiredResult flow"""
    if ctx.input_responses and "confirm" in ctx.input_responses and ctx.request_state == "request-state-nonce":
        return "state-ok: confirmation received"
    return InputRequiredResult(input_requests={"confirm": _confirmation_request()}, request_state="request-state-nonce")


async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult carrying elicitation, sampling and roots requests together"""
    if ctx.input_responses and {"user_name", "greeting", "client_roots"} <= ctx.input_responses.keys():
        return "All inputs received."
    requests: dict[str, InputRequest] = {
        "user_name": _elicitation_request("What is your name?", "name"),
        "greeting": _sampling_request("Generate a greeting", max_tokens=50),
        "client_roots": ListRootsRequest(),
    }
    return InputRequiredResult(input_requests=requests, request_state="multiple-inputs")


async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Tests a three-round InputRequiredResult flow with evolving requestState"""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    responses = ctx.input_responses or {}
    if state["round"] == 1 and "step1" in responses:
        name = _field_of(responses["step1"], "name")
        step2 = _elicitation_request("Step 2: What is your favorite color?", "color")
        return InputRequiredResult(
            input_requests={"step2": step2}, request_state=json.dumps({"round": 2, "name": name})
        )
    if state["round"] == 2 and "step2" in responses:
        return f"{state.get('name')} likes {_field_of(responses['step2'], 'color')}."
    # First round, or a missing or out-of-order answer: start over.
    step1 = _elicitation_request("Step 1: What is your name?", "name")
    return InputRequiredResult(input_requests={"step1": step1}, request_state=json.dumps({"round": 1}))


async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Tests that the server rejects a tampered requestState echo (the SDK seals and checks it)"""
    if ctx.request_state is None:
        return InputRequiredResult(input_requests={"confirm": _confirmation_request()}, request_state="round-1")
    return f"state-ok: {ctx.request_state}"


async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Tests that inputRequests only include methods the client declared support for"""
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        requests["sample"] = _sampling_request("Say hello", max_tokens=50)
    if caps is None or caps.elicitation is not None:
        requests["ask"] = _elicitation_request("What is your name?", "name")
    return InputRequiredResult(input_requests=requests, request_state="capability-gated")


def json_schema_2020_12_tool() -> str:
    """Tests JSON Schema 2020-12 keyword preservation in tools/list"""
    return "json_schema_2020_12_tool"


JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

# Conformance fixtures: resources and prompts.


def static_text() -> str:
    """A static text resource for testing"""
    return "This is the content of the static text resource."


def static_binary() -> bytes:
    """A static binary resource (image) for testing"""
    return base64.b64decode(PNG_1X1)


def template_data(id: str) -> str:
    """A resource template with parameter substitution"""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


def watched_resource() -> str:
    """A resource that can be subscribed to for updates"""
    return "Watched resource content"


def test_simple_prompt() -> list[UserMessage]:
    """A simple prompt without arguments"""
    return [UserMessage(content=TextContent(type="text", text="This is a simple prompt for testing."))]


def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with required arguments"""
    text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
    return [UserMessage(content=TextContent(type="text", text=text))]


def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    """A prompt that includes an embedded resource"""
    text = "Embedded resource content for testing."
    resource = TextResourceContents(uri=resourceUri, mime_type="text/plain", text=text)
    return [
        UserMessage(content=EmbeddedResource(type="resource", resource=resource)),
        UserMessage(content=TextContent(type="text", text="Please process the embedded resource above.")),
    ]


def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that includes image content"""
    return [
        UserMessage(content=ImageContent(type="image", data=PNG_1X1, mime_type="image/png")),
        UserMessage(content=TextContent(type="text", text="Please analyze the image above.")),
    ]


async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    """Tests InputRequiredResult from prompts/get (SEP-2322 non-tool request)"""
    if ctx.input_responses and "user_context" in ctx.input_responses:
        text = _field_of(ctx.input_responses["user_context"], "context") or "?"
        return [UserMessage(content=TextContent(type="text", text=f"Use the following context: {text}"))]
    question = _elicitation_request("What context should the prompt use?", "context")
    return InputRequiredResult(input_requests={"user_context": question})


_COMPLETIONS = {"arg1": ["test-value-1", "test-value-2", "other"], "id": ["123", "456"]}


async def complete(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: CompletionContext | None
) -> Completion:
    values = [v for v in _COMPLETIONS.get(argument.name, []) if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


async def _accept(ctx: ServerRequestContext, params: Any) -> EmptyResult:
    # logging/setLevel and resources/(un)subscribe only need acknowledging: nothing here changes.
    return EmptyResult()


_TOOLS: list[Callable[..., Any]] = [
    test_simple_text, test_image_content, test_audio_content, test_embedded_resource, test_multiple_content_types,
    test_tool_with_logging, test_tool_with_progress, test_sampling, test_elicitation, test_elicitation_sep1034_defaults,
    test_elicitation_sep1330_enums, test_error_handling, test_x_mcp_header, test_missing_capability, test_reconnection,
    test_trigger_tool_change, test_trigger_prompt_change, test_input_required_result_elicitation,
    test_input_required_result_sampling, test_input_required_result_list_roots,
    test_input_required_result_request_state, test_input_required_result_multiple_inputs,
    test_input_required_result_multi_round, test_input_required_result_tampered_state,
    test_input_required_result_capabilities, echo, emit_progress, ask_model, ask_user, show_request_headers, whoami,
]  # fmt: skip
_PROMPTS: list[Callable[..., Any]] = [
    test_simple_prompt, test_prompt_with_arguments, test_prompt_with_embedded_resource, test_prompt_with_image,
    test_input_required_result_prompt,
]  # fmt: skip
_RESOURCES: dict[str, Callable[..., Any]] = {
    "test://static-text": static_text,
    "test://static-binary": static_binary,
    "test://template/{id}/data": template_data,
    "test://watched-resource": watched_resource,
}


def build_server(auth: ResourceAuth | None = None) -> MCPServer:
    """A fresh server with every fixture registered (each has its own tool list, so tests cannot interfere)."""
    schema_tool = Tool.from_function(json_schema_2020_12_tool).model_copy(update={"parameters": JSON_SCHEMA_2020_12})
    settings: dict[str, Any] = {}
    if auth is not None:
        settings["auth"] = AuthSettings(
            issuer_url=next(iter(auth.issuers), auth.resource),  # type: ignore[arg-type]
            resource_server_url=auth.resource,  # type: ignore[arg-type]
            validate_token_resource=True,
        )
        settings["token_verifier"] = JwtVerifier(auth)
    # log_level only applies if nothing configured logging before (MCPServer calls logging.basicConfig).
    server = MCPServer(
        name="mcp-gateway-everything-server", version="0.1.0", tools=[schema_tool], log_level="WARNING", **settings
    )
    for tool in _TOOLS:
        server.add_tool(tool)
    # The schema tool is listed last: the conformance suite's header-validation scenario calls the first
    # listed tool with `{}`, which this schema refuses (it requires a phone or an email). The SDK does not
    # validate against a replaced schema, but a proxy that enforces pinned input schemas (the gateway)
    # rightly refuses the call before it arrives. MCPServer has no public way to add a Tool object later.
    tools = server._tool_manager._tools  # pyright: ignore[reportPrivateUsage]
    tools[schema_tool.name] = tools.pop(schema_tool.name)
    server.add_tool(delete_everything, annotations=ToolAnnotations(destructive_hint=True, read_only_hint=False))
    for uri, read in _RESOURCES.items():
        server.resource(uri)(read)
    for prompt in _PROMPTS:
        server.prompt()(prompt)
    server.completion()(complete)  # type: ignore[no-untyped-call]  # the SDK leaves this decorator untyped
    # MCPServer has no public hook for these three handshake-era methods, so register them on the low-level server.
    lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, _accept)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, _accept)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _accept)
    return server


class StripHeaderWhitespace:
    """ASGI middleware: RFC 9110 §5.5, a field value excludes the whitespace around it.

    uvicorn's default (httptools) parser keeps trailing whitespace, and the SDK compares ``Mcp-Name`` with
    the body byte for byte, so ``Mcp-Name: echo `` would be refused with -32020 although it names ``echo``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [(name, value.strip(b" \t")) for name, value in scope["headers"]]}
        await self.app(scope, receive, send)


def loopback_security(extra_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    """DNS-rebinding protection that admits only loopback Host and Origin values (plus ``extra_hosts``)."""
    hosts = ["127.0.0.1", "localhost", "[::1]", *extra_hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[pattern for host in hosts for pattern in (host, f"{host}:*")],
        allowed_origins=[pattern for host in hosts for pattern in (f"http://{host}", f"http://{host}:*")],
    )


def build_app(
    *,
    transport_security: TransportSecuritySettings | None = None,
    event_store: EventStore | None = None,
    auth: ResourceAuth | None = None,
) -> Starlette:
    """The ASGI app serving ``/mcp`` in both eras; its lifespan must run (uvicorn's ``lifespan="on"``)."""
    app = build_server(auth).streamable_http_app(
        streamable_http_path="/mcp",
        event_store=event_store if event_store is not None else InMemoryEventStore(),
        retry_interval=100,  # milliseconds, announced in the priming event so polling clients come back quickly
        transport_security=transport_security if transport_security is not None else loopback_security(),
    )
    app.add_middleware(StripHeaderWhitespace)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a Host (and http Origin) to accept besides the loopback ones (repeatable)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--resource", help="verify bearer tokens: this server's URL, the audience they must name")
    parser.add_argument(
        "--trust", action="append", default=[], metavar="ISSUER=JWKS_URI", help="an issuer whose JWTs are accepted"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())  # before the SDK configures logging at INFO
    auth = None
    if args.resource:
        auth = ResourceAuth(args.resource, dict(item.split("=", 1) for item in args.trust))
    app = build_app(transport_security=loopback_security(args.allowed_host), auth=auth)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
