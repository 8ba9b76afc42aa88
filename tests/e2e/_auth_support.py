"""Support for the gateway-level auth, OAuth-client and policy tests: raw MCP requests, challenge parsing,
hostile tokens signed with real keys, and loopback servers that count what reaches them.

Everything here talks to a real stack (`tests._stack.gateway_stack`) over real sockets; nothing mocks the
gateway. Tokens are built byte for byte so that claims pyjwt itself would refuse to encode can be signed.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm

import tests._stack as stack_module
from mcp_gateway.audit.sqlite import SQLiteAuditReader
from mcp_gateway.devissuer.server import create_issuer_app
from tests._jws import jws
from tests._mcp import MODERN_META
from tests._servers import serve_asgi
from tests._stack import Stack

# --- raw MCP requests ------------------------------------------------------------------------------


def envelope() -> dict[str, Any]:
    """The `_meta` every 2026-07-28 request carries (the SDK sends exactly these keys)."""
    return {**MODERN_META, "io.modelcontextprotocol/clientInfo": {"name": "e2e-raw", "version": "0"}}


def rpc(
    method: str, params: Mapping[str, Any] | None = None, *, id: int | str = 1, modern: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = dict(params or {})
    if modern:
        body["_meta"] = {**envelope(), **body.get("_meta", {})}
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": body}


def tool_call(
    name: str, arguments: Mapping[str, Any] | None = None, *, id: int | str = 1, modern: bool = True
) -> dict[str, Any]:
    return rpc("tools/call", {"name": name, "arguments": dict(arguments or {})}, id=id, modern=modern)


def jsonrpc_answer(response: httpx2.Response) -> dict[str, Any]:
    """The one JSON-RPC message in a JSON or SSE response body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [
            json.loads(line[len("data:") :])
            for line in response.text.splitlines()
            if line.startswith("data:") and line[len("data:") :].strip()
        ]
        answers = [m for m in messages if "result" in m or "error" in m]
        assert len(answers) == 1, f"expected one answer on the stream, got {messages}"
        answer: dict[str, Any] = answers[0]
        return answer
    value = response.json()
    assert isinstance(value, dict), value
    return value


# --- WWW-Authenticate ------------------------------------------------------------------------------

_TOKEN68_OR_PARAM = re.compile(
    r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*(,|$)'
)


def parse_challenge(value: str | None) -> tuple[str, dict[str, str]]:
    """One RFC 9110 §11.6.1 challenge: (scheme, auth-params), quoted strings unescaped.

    Refuses (AssertionError) anything that is not exactly one well-formed challenge, or that repeats
    a parameter (RFC 9110 §11.2: each parameter name MUST occur only once per challenge).
    """
    assert value is not None, "no WWW-Authenticate header"
    scheme, _, rest = value.partition(" ")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _TOKEN68_OR_PARAM.match(rest, position)
        assert match is not None, f"malformed auth-param list at {rest[position:]!r} in {value!r}"
        name, raw = match.group(1).lower(), match.group(2)
        assert name not in params, f"parameter {name} repeated in {value!r}"
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
    return scheme, params


def assert_challenge(
    response: httpx2.Response,
    *,
    status: int,
    error: str | None,
    scope: str | None,
    resource_metadata: str,
    case: str = "",
) -> dict[str, str]:
    """Status and the exact challenge: scheme Bearer, these parameters and no others (error_description
    is allowed only alongside an error code, RFC 6750 §3)."""
    where = f"[{case}] " if case else ""
    assert response.status_code == status, f"{where}status {response.status_code}, body {response.text[:300]}"
    scheme, params = parse_challenge(response.headers.get("www-authenticate"))
    assert scheme == "Bearer", f"{where}scheme {scheme!r}"
    expected: dict[str, str] = {"resource_metadata": resource_metadata}
    if error is not None:
        expected["error"] = error
    if scope is not None:
        expected["scope"] = scope
    got = {k: v for k, v in params.items() if k != "error_description"}
    assert got == expected, f"{where}challenge {response.headers.get('www-authenticate')!r}, expected {expected}"
    if error is None:
        assert "error_description" not in params, f"{where}error_description without an error code"
    assert len(response.headers.get_list("www-authenticate")) == 1, f"{where}several challenges"
    return params


# --- token leaks -----------------------------------------------------------------------------------


def token_fragments(token: str) -> list[str]:
    """The token and each of its parts long enough that finding it by accident is impossible."""
    parts = [token, *token.split(".")]
    return [part for part in dict.fromkeys(parts) if len(part) >= 12]


def assert_no_token_leak(response: httpx2.Response, token: str, case: str = "") -> None:
    """No part of `token` in the status line's body or any response header."""
    text = response.content.decode("latin-1") + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    for fragment in token_fragments(token):
        assert fragment not in text, f"[{case}] the response echoes part of the token: {fragment[:16]}…"


async def audit_rows(stack: Stack) -> list[dict[str, Any]]:
    """Every audit row so far, after making the sink write what it has queued."""
    flush = getattr(stack.app.audit, "flush", None)
    if flush is not None:
        await flush()
    return list(SQLiteAuditReader(stack.config.path_for(stack.config.audit.database)).query())


# --- tokens ----------------------------------------------------------------------------------------


def claims_for(
    stack: Stack,
    *,
    now: float | None = None,
    client: str = "agent-a",
    scope: str | None = "tools:read",
    **overrides: Any,
) -> dict[str, Any]:
    """Claims the dev issuer would put in a token for `client` at the everything route; `None` removes one."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": stack.issuer.issuer,
        "sub": f"user-of-{client}",
        "aud": stack.mcp_url(),
        "exp": issued + 300,
        "iat": issued,
        "nbf": issued,
        "jti": secrets.token_urlsafe(12),
        "client_id": client,
        "scope": scope,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def issuer_signed(stack: Stack, claims: object, **header: Any) -> str:
    """Signed with the dev issuer's own key: everything about the signature is right."""
    key = stack.issuer.key
    return jws(key.private_key, key.algorithm, {"kid": key.kid, "typ": "at+jwt", **header}, claims)


@dataclass(frozen=True)
class AttackerKeys:
    """Real key pairs that are not in the issuer's JWKS."""

    rsa: rsa.RSAPrivateKey
    ec256: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey
    ed25519: ed25519.Ed25519PrivateKey

    @classmethod
    def generate(cls) -> AttackerKeys:
        return cls(
            rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec256=ec.generate_private_key(ec.SECP256R1()),
            ec384=ec.generate_private_key(ec.SECP384R1()),
            ed25519=ed25519.Ed25519PrivateKey.generate(),
        )

    def ec256_jwk(self, kid: str) -> dict[str, Any]:
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.ec256.public_key(), as_dict=True)
        return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}

    def ec256_certificate_der(self) -> bytes:
        """A self-signed certificate for the attacker's P-256 key (what an `x5c` header would carry)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.attacker.test")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ec256.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.ec256, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)


def public_pem(private_key: Any) -> bytes:
    return bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# --- loopback servers that count what reaches them ---------------------------------------------------


@dataclass
class RequestLog:
    """Requests an ASGI app received: (method, path, query string, body)."""

    requests: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def count(self, path: str | None = None) -> int:
        return sum(1 for _, p, _, _ in self.requests if path is None or p == path)

    def forms(self, path: str) -> list[dict[str, str]]:
        """The url-encoded bodies POSTed to `path` (token requests), decoded."""
        return [
            dict(parse_qsl(body.decode())) for method, p, _, body in self.requests if method == "POST" and p == path
        ]


class RecordingApp:
    """ASGI middleware recording every HTTP request before passing it on (or answering 404 itself)."""

    def __init__(self, app: Any | None, log: RequestLog | None = None, documents: Mapping[str, bytes] | None = None):
        self.app = app
        self.log = log if log is not None else RequestLog()
        self.documents = dict(documents or {})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if self.app is not None:
                await self.app(scope, receive, send)
            elif scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        body = bytearray()
        replay: list[Any] = []
        while True:
            message = await receive()
            replay.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        self.log.requests.append(
            (scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"), bytes(body))
        )

        async def replaying_receive() -> Any:
            return replay.pop(0) if replay else await receive()

        if self.app is not None:
            await self.app(scope, replaying_receive, send)
            return
        document = self.documents.get(scope["path"])
        status, payload = (200, document) if document is not None else (404, b"{}")
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def bait_server(documents: Mapping[str, bytes]) -> AsyncIterator[tuple[str, RequestLog]]:
    """A loopback server an attacker controls (serving a JWKS, a certificate...): its URL and what reached it."""
    app = RecordingApp(None, documents=documents)
    async with serve_asgi(app) as base_url:
        yield base_url, app.log


@contextmanager
def recorded_issuer() -> Iterator[RequestLog]:
    """While active, stacks started with `gateway_stack` serve their dev issuer behind a request recorder,
    so tests can count JWKS fetches and read token requests (the `resource` and `scope` a client sent)."""
    log = RequestLog()
    original = create_issuer_app

    def create_recorded_issuer_app(*args: Any, **kwargs: Any) -> Any:
        return RecordingApp(original(*args, **kwargs), log)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module, "create_issuer_app", create_recorded_issuer_app)
        yield log


# --- the SDK's token storage ------------------------------------------------------------------------


class MemoryTokenStorage:
    """`mcp.client.auth.TokenStorage` in memory (what an SDK user writes in five lines)."""

    def __init__(self, tokens: Any = None) -> None:
        self.tokens = tokens
        self.client_info: Any = None
        self.history: list[Any] = []

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWS without checking it (for inspecting what the issuer granted)."""
    payload = token.split(".")[1]
    value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(value, dict)
    return value


def scopes_named(rules: Sequence[Mapping[str, Sequence[str]]], default: Sequence[str] = ()) -> list[str]:
    return sorted({scope for table in rules for scopes in table.values() for scope in scopes} | set(default))
