"""The demo flow as a client sees it, against any running gateway: stdlib only, so it runs anywhere python3 does.

    python3 scripts/smoke_client.py --url http://127.0.0.1:8080 --token "$TOKEN" [--server everything] [--calls 8]

Checks, in order: /healthz and /readyz answer 200; a call without a token gets 401 with RFC 9728
`resource_metadata`; `--calls` stateless (2026-07-28) `tools/call echo` calls come back with their text;
a handshake (2025-11-25) session is initialized and `--calls` calls are made in it (behind a round-robin
load balancer these land on every replica, which is what proves that sealed sessions need no stickiness);
the session is ended with DELETE. Prints one line per check; exits 1 at the first failure.
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


def run(base: str, token: str, server: str, calls: int) -> None:
    endpoint = f"{base}/{server}/mcp"
    for path in ("/healthz", "/readyz"):
        status, _, _ = _request("GET", base + path)
        _check(status == 200, f"GET {path} answers 200 (got {status})")

    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "smoke", "version": "0"},
        },
    }
    status, headers, _ = _request(
        "POST", endpoint, initialize, {"accept": _ACCEPT, "mcp-protocol-version": "2025-11-25"}
    )
    challenge = headers.get("www-authenticate", "")
    _check(status == 401 and "resource_metadata=" in challenge, f"no token: 401 with resource_metadata ({status})")

    bearer = {"authorization": f"Bearer {token}", "accept": _ACCEPT}
    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    stateless = {**bearer, "mcp-protocol-version": version, "mcp-method": "tools/call", "mcp-name": "echo"}
    for n in range(calls):
        text = f"stateless {n}"
        params = {"name": "echo", "arguments": {"message": text}, "_meta": meta}
        status, headers, raw = _request(
            "POST", endpoint, {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}, stateless
        )
        if status != 200 or _echo_text(_message(headers, raw)) != text:
            raise SmokeFailure(f"stateless call {n}: HTTP {status}: {raw[:300]!r}")
    print(f"ok    {calls} stateless ({version}) echo calls")

    legacy = {**bearer, "mcp-protocol-version": "2025-11-25"}
    status, headers, raw = _request("POST", endpoint, initialize, legacy)
    session = headers.get("mcp-session-id")
    _check(status == 200 and bool(session), f"initialize (2025-11-25) opens a session (HTTP {status})")
    in_session = {**legacy, "mcp-session-id": session or ""}
    status, _, _ = _request("POST", endpoint, {"jsonrpc": "2.0", "method": "notifications/initialized"}, in_session)
    _check(status == 202, f"notifications/initialized accepted (HTTP {status})")
    for n in range(calls):
        text = f"session {n}"
        body = {
            "jsonrpc": "2.0",
            "id": n + 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": text}},
        }
        status, headers, raw = _request("POST", endpoint, body, in_session)
        if status != 200 or _echo_text(_message(headers, raw)) != text:
            raise SmokeFailure(f"call {n} in the session: HTTP {status}: {raw[:300]!r}")
    print(f"ok    {calls} echo calls in one session")
    status, _, _ = _request("DELETE", endpoint, None, in_session)
    _check(status in (200, 202, 204), f"DELETE ends the session (HTTP {status})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="the gateway's (or load balancer's) origin")
    parser.add_argument("--token", required=True, help="a bearer token for {url}/{server}/mcp with tools:read")
    parser.add_argument("--server", default="everything")
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        run(args.url.rstrip("/"), args.token, args.server, args.calls)
    except (SmokeFailure, OSError, ValueError) as exc:
        print(f"FAIL  {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
