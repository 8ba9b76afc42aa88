"""The demo flow as a client sees it, against any running gateway: stdlib only, so it runs anywhere python3 does.

    python3 scripts/smoke_client.py --url http://127.0.0.1:8080 --token "$TOKEN" [--server everything] [--calls 8]
    python3 scripts/smoke_client.py --url http://127.0.0.1:8081 --url http://127.0.0.1:8082 --token "$TOKEN"

Checks, in order: /healthz and /readyz answer 200; a call without a token gets 401 with RFC 9728
`resource_metadata`; `--calls` stateless (2026-07-28) `tools/call echo` calls come back with their text;
a handshake (2025-11-25) session is initialized and `--calls` calls are made in it (behind a round-robin
load balancer these land on every replica, which is what proves that sealed sessions need no stickiness);
the session is ended with DELETE. With several `--url`s (replicas reached directly) each MCP request goes to
the next one in turn, so a session opened on one replica is used on the others. Prints one line per check;
exits 1 at the first failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

_ACCEPT = "application/json, text/event-stream"


class SmokeFailure(Exception):
    pass


def _request(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _message(headers: dict[str, str], raw: bytes) -> Any:
    """The JSON-RPC message of a JSON or SSE answer (the last `data:` event that carries an id)."""
    if headers.get("content-type", "").startswith("text/event-stream"):
        found = None
        for line in raw.decode().splitlines():
            if line.startswith("data:") and line[5:].strip():
                event = json.loads(line[5:])
                if isinstance(event, dict) and "id" in event:
                    found = event
        return found
    return json.loads(raw)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    print(f"ok    {what}")


def _echo_text(message: Any) -> str | None:
    try:
        return str(message["result"]["content"][0]["text"])
    except (KeyError, IndexError, TypeError):
        return None


class _Endpoints:
    """The MCP endpoint at each base URL, taken in turn (what a round-robin load balancer does)."""

    def __init__(self, bases: list[str], server: str) -> None:
        self.urls = [f"{base}/{server}/mcp" for base in bases]
        self.turn = 0

    def next(self) -> str:
        url = self.urls[self.turn % len(self.urls)]
        self.turn += 1
        return url


def run(bases: list[str], token: str, server: str, calls: int) -> None:
    endpoints = _Endpoints(bases, server)
    for base in bases:
        for path in ("/healthz", "/readyz"):
            status, _, _ = _request("GET", base + path)
            _check(status == 200, f"GET {base}{path} answers 200 (got {status})")

    legacy_version = "2025-11-25"
    client_info = {"name": "smoke", "version": "0"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": legacy_version, "capabilities": {}, "clientInfo": client_info},
    }
    anonymous = {"accept": _ACCEPT, "mcp-protocol-version": legacy_version}
    status, headers, _ = _request("POST", endpoints.next(), initialize, anonymous)
    challenge = headers.get("www-authenticate", "")
    _check(status == 401 and "resource_metadata=" in challenge, f"no token: 401 with resource_metadata ({status})")

    bearer = {"authorization": f"Bearer {token}", "accept": _ACCEPT}
    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    stateless = {**bearer, "mcp-protocol-version": version, "mcp-method": "tools/call", "mcp-name": "echo"}
    for n in range(calls):
        text = f"stateless {n}"
        params = {"name": "echo", "arguments": {"message": text}, "_meta": meta}
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
        status, headers, raw = _request("POST", endpoints.next(), body, stateless)
        if status != 200 or _echo_text(_message(headers, raw)) != text:
            raise SmokeFailure(f"stateless call {n}: HTTP {status}: {raw[:300]!r}")
    print(f"ok    {calls} stateless ({version}) echo calls")

    legacy = {**bearer, "mcp-protocol-version": legacy_version}
    status, headers, raw = _request("POST", endpoints.next(), initialize, legacy)
    session = headers.get("mcp-session-id")
    _check(status == 200 and bool(session), f"initialize ({legacy_version}) opens a session (HTTP {status})")
    in_session = {**legacy, "mcp-session-id": session or ""}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    status, _, _ = _request("POST", endpoints.next(), initialized, in_session)
    _check(status == 202, f"notifications/initialized accepted (HTTP {status})")
    for n in range(calls):
        text = f"session {n}"
        params = {"name": "echo", "arguments": {"message": text}}
        body = {"jsonrpc": "2.0", "id": n + 1, "method": "tools/call", "params": params}
        status, headers, raw = _request("POST", endpoints.next(), body, in_session)
        if status != 200 or _echo_text(_message(headers, raw)) != text:
            raise SmokeFailure(f"call {n} in the session: HTTP {status}: {raw[:300]!r}")
    print(f"ok    {calls} echo calls in one session")
    status, _, _ = _request("DELETE", endpoints.next(), None, in_session)
    _check(status in (200, 202, 204), f"DELETE ends the session (HTTP {status})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url", required=True, action="append", help="the gateway's (or load balancer's) origin; repeat for replicas"
    )
    parser.add_argument("--token", required=True, help="a bearer token for {url}/{server}/mcp with tools:read")
    parser.add_argument("--server", default="everything")
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        run([url.rstrip("/") for url in args.url], args.token, args.server, args.calls)
    except (SmokeFailure, OSError, ValueError) as exc:
        print(f"FAIL  {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
