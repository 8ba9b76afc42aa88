"""`GET /console`: the approvers' and auditors' page, its script and its style, served as static files.

No inline script or style: the Content-Security-Policy allows only these files (`script-src 'self'`), and
the script writes every value with `textContent`, never as HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Final

from mcp_gateway.errors import HTTPError
from mcp_gateway.transport.asgi import Send

CONSOLE_PATH: Final = "/console"
_FILES: Final = {
    CONSOLE_PATH: ("console.html", b"text/html; charset=utf-8"),
    CONSOLE_PATH + "/console.js": ("console.js", b"text/javascript; charset=utf-8"),
    CONSOLE_PATH + "/console.css": ("console.css", b"text/css; charset=utf-8"),
    CONSOLE_PATH + "/icon.svg": ("icon.svg", b"image/svg+xml"),
}
_CACHE: dict[str, bytes] = {}


def handles(path: str) -> bool:
    return path in _FILES


def _read(name: str) -> bytes:
    body = _CACHE.get(name)
    if body is None:
        body = _CACHE[name] = files("mcp_gateway.approvals").joinpath("static", name).read_bytes()
    return body


async def serve(path: str, method: str, send: Send, security: Sequence[tuple[bytes, bytes]]) -> None:
    if method not in ("GET", "HEAD"):
        raise HTTPError("Method Not Allowed", status_code=405, headers=[("allow", "GET")])
    name, content_type = _FILES[path]
    body = _read(name)
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *security]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
