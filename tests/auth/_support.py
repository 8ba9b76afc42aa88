"""Test support: a controllable loopback HTTP server, an injected clock, real keys, token builders."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import jwt
from anyio.abc import SocketAttribute, SocketStream
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test"
_MAX_IDENTITY_CHARS = 256  # mcp_gateway.auth.claims.MAX_IDENTITY_CHARS, spelt out so a change shows here
RESOURCE = "http://127.0.0.1:8080/github/mcp"
T0 = 1_800_000_000.0


class FakeClock:
    """The injected clock: time moves only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- a loopback HTTP/1.1 server whose every answer the test decides ---------------------------------


@dataclass(frozen=True)
class StubRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class StubResponse:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    chunked: bool = False  # Transfer-Encoding: chunked, so no Content-Length announces the size

    @classmethod
    def json(cls, value: object, status: int = 200) -> StubResponse:
        return cls(status=status, body=json.dumps(value).encode())


Handler = Callable[[StubRequest], Awaitable[StubResponse]]


@dataclass
class StubServer:
    handler: Handler
    port: int = 0
    requests: list[StubRequest] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path == path)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            try:
                request = await _read_request(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError, ValueError):
                return
            self.requests.append(request)
            response = await self.handler(request)
            framing = "transfer-encoding: chunked" if response.chunked else f"content-length: {len(response.body)}"
            head = [f"HTTP/1.1 {response.status} Stub", framing, "connection: close"]
            head += [f"{name}: {value}" for name, value in response.headers]
            body = response.body
            if response.chunked:
                size = 64 * 1024
                pieces = [body[i : i + size] for i in range(0, len(body), size)]
                body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


async def _read_request(stream: SocketStream) -> StubRequest:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
        if len(buffer) > 256 * 1024:
            raise ValueError("head too large")
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += await stream.receive()
    return StubRequest(method=method, path=target, headers=headers, body=body)


@contextlib.asynccontextmanager
async def stub_server(handler: Handler) -> AsyncIterator[StubServer]:
    """Serve `handler` on 127.0.0.1:<free port> for the duration of the block."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server = StubServer(handler=handler, port=listener.extra(SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, server._handle)
        try:
            yield server
        finally:
            group.cancel_scope.cancel()


# --- real keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    kid: str
    alg: str
    private_key: Any
    jwk: dict[str, Any]

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@functools.cache
def _rsa(index: int, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def _ec(index: int, curve_name: str) -> ec.EllipticCurvePrivateKey:
    curve: ec.EllipticCurve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[curve_name]
    return ec.generate_private_key(curve)


@functools.cache
def _ed25519(index: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def rsa_key(kid: str = "rsa-1", alg: str = "RS256", index: int = 0, bits: int = 2048) -> KeyPair:
    private = _rsa(index, bits)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair(kid=kid, alg=alg, private_key=private, jwk={**jwk, "kid": kid, "use": "sig"})


def ec_key(kid: str = "ec-1", curve: str = "P-256", index: int = 0) -> KeyPair:
    private = _ec(index, curve)
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    alg = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[curve]
    return KeyPair(kid=kid, alg=alg, private_key=private, jwk={**jwk, "kid": kid})


def ed25519_key(kid: str = "ed-1", index: int = 0) -> KeyPair:
    private = _ed25519(index)
    jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return KeyPair(kid=kid, alg="EdDSA", private_key=private, jwk={**jwk, "kid": kid})


def ed448_jwk(kid: str = "ed448-1") -> dict[str, Any]:
    jwk = OKPAlgorithm.to_jwk(ed448.Ed448PrivateKey.generate().public_key(), as_dict=True)
    return {**jwk, "kid": kid}


# --- tokens ----------------------------------------------------------------------------------------


def good_claims(now: float = T0, **overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": RESOURCE,
        "exp": int(now) + 300,
        "iat": int(now),
        "nbf": int(now),
        "jti": "token-1",
        "client_id": "agent-1",
        "scope": "tools:read tools:call",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not _ABSENT}


_ABSENT: Any = object()
ABSENT: Any = _ABSENT  # pass as a claim value to remove the claim

# SECURITY.md "identity claims with control characters are refused": one value per family of characters
# that can forge a record line, drive a terminal or reorder what a reader sees, and one too long.
_CONTROL = "contains a control character"
_SEPARATOR = "contains a line or paragraph separator"
_BIDI = "contains a bidirectional formatting character"
HOSTILE_IDENTITY_VALUES: dict[str, tuple[str, str]] = {  # family: (value, what the description says)
    "c0-escape": ("alice\x1b[2Jroot", _CONTROL),
    "c0-crlf": ("alice\r\nagent_id: root", _CONTROL),
    "c0-nul": ("alice\x00root", _CONTROL),
    "c0-tab": ("alice\troot", _CONTROL),
    "del": ("alice\x7f", _CONTROL),
    "c1-csi": ("alice\x9b31m", _CONTROL),
    "c1-nel": ("alice\x85root", _CONTROL),
    "line-separator": ("alice\u2028root", _SEPARATOR),
    "paragraph-separator": ("alice\u2029root", _SEPARATOR),
    "bidi-rlo": ("alice\u202etoor", _BIDI),
    "bidi-lre": ("\u202aalice", _BIDI),
    "bidi-rli": ("alice\u2067toor\u2069", _BIDI),
    "bidi-rlm": ("alice\u200f", _BIDI),
    "lone-surrogate": ("alice\ud800", "contains an unpaired surrogate"),
    "too-long": ("alice" + "a" * _MAX_IDENTITY_CHARS, f"is longer than {_MAX_IDENTITY_CHARS} characters"),
}


def sign(key: KeyPair, claims: Mapping[str, object], *, alg: str | None = None, **header: object) -> str:
    """A correctly signed JWS with `key`; extra header members as given (kid defaults to the key's)."""
    headers: dict[str, Any] = {"kid": key.kid, **header}
    if headers["kid"] is None:
        del headers["kid"]
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()  # any JSON, even claims pyjwt would refuse
    return jwt.PyJWS().encode(payload, key.private_key, algorithm=alg or key.alg, headers=headers)


# --- a JWKS endpoint with switchable behaviour ---------------------------------------------------


@dataclass
class JWKSEndpoint:
    """What the issuer's JWKS URL answers; tests flip `mode` and `keys` between requests."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "up"  # up | garbage | empty | huge | huge-chunked | slow | error | gzip | redirect
    metadata: dict[str, Any] | None = None  # served at the RFC 8414 well-known URL when set
    release: anyio.Event = field(default_factory=anyio.Event)  # lets a "slow" answer finish
    arrived: anyio.Event = field(default_factory=anyio.Event)  # set when a JWKS request comes in

    async def __call__(self, request: StubRequest) -> StubResponse:
        if request.path.startswith("/.well-known/"):
            if self.metadata is not None and request.path == "/.well-known/oauth-authorization-server":
                return StubResponse.json(self.metadata)
            return StubResponse(status=404)
        if request.path != "/jwks.json":
            return StubResponse(status=404)
        self.arrived.set()
        if self.mode == "slow":
            await self.release.wait()
        if self.mode == "garbage":
            return StubResponse(body=b"<html>oops</html>")
        if self.mode == "empty":
            return StubResponse.json({"keys": []})
        if self.mode in ("huge", "huge-chunked"):
            document = StubResponse.json({"keys": self.keys, "padding": "x" * (2 * 1024 * 1024)})
            document.chunked = self.mode == "huge-chunked"
            return document
        if self.mode == "error":
            return StubResponse.json({"error": "down"}, status=503)
        if self.mode == "gzip":
            return StubResponse(body=b"\x1f\x8b...", headers=(("content-encoding", "gzip"),))
        if self.mode == "redirect":
            return StubResponse(status=302, headers=(("location", "/jwks.json"),))
        return StubResponse.json({"keys": self.keys})
