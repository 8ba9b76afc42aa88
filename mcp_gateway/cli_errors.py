"""How the command line tells a failure: one line naming the problem and the fix, never a traceback."""

from __future__ import annotations

import argparse
import errno
import tomllib
from pathlib import Path
from typing import Final

from mcp_gateway.audit.safe_text import visible
from mcp_gateway.errors import ConfigError, GatewayError

EXIT_USAGE: Final = 2  # the input was wrong or unusable: the message says what to change
EXIT_INTERNAL: Final = 70  # sysexits.h EX_SOFTWARE: a defect in the gateway itself
_MAX_MESSAGE: Final = 600
_MAX_INTERNAL_DETAIL: Final = 200  # an unexpected error's text is shortened: it was never meant for users

# What to do about the OS errors a command meets on its inputs.
_OS_FIXES: Final = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check the file's permissions",
    errno.EPERM: "check the file's permissions",
    errno.EISDIR: "name a file, not a directory",
    errno.ENOTDIR: "a part of the path is not a directory; check the path",
    errno.EADDRINUSE: "another process holds that address; stop it or pick another port",
    errno.EADDRNOTAVAIL: "that address is not on this machine; pick another host",
    errno.ECONNREFUSED: "nothing listens there; start it or check the address",
    errno.ENOSPC: "the disk is full; free some space",
    errno.EROFS: "the file system is read-only; pick a writable path",
}


def explain(exc: BaseException, *, config_option: tuple[str, str] | None = None) -> tuple[int, str]:
    """The exit status and the one-line message for a command that raised `exc`.

    `config_option` is the command's file option and its value (`("--config", "./gateway.toml")`): when
    that very file cannot be read, the message says how to name another one. Messages are escaped like
    audit fields (they can quote file contents or an upstream's words) and never carry a traceback.
    """
    exc = _sole_cause(exc)
    if isinstance(exc, ConfigError):
        message = f"configuration error: {exc}"
        if exc.key == "(file)" and config_option is not None and _same_path(exc.file, config_option[1]):
            message += f"; pass {config_option[0]} PATH to use another file"
        return EXIT_USAGE, _one_line(message)
    if isinstance(exc, GatewayError):
        return EXIT_USAGE, _one_line(f"error: {exc}")
    if isinstance(exc, OSError):
        return EXIT_USAGE, _one_line(_os_message(exc))
    if isinstance(exc, UnicodeDecodeError):
        where = f"{exc.reason} at byte {exc.start}"
        return EXIT_USAGE, _one_line(f"error: a file is not UTF-8 text ({where}); save it as UTF-8")
    if isinstance(exc, tomllib.TOMLDecodeError):
        return EXIT_USAGE, _one_line(f"error: not valid TOML: {exc}; fix the syntax there")
    if isinstance(exc, ValueError):
        return EXIT_USAGE, _one_line(f"error: {exc}")
    detail = str(exc)
    if len(detail) > _MAX_INTERNAL_DETAIL:
        detail = detail[: _MAX_INTERNAL_DETAIL - 1] + "…"
    return EXIT_INTERNAL, _one_line(
        f"internal error: {type(exc).__name__}: {detail}; please report this, with the command that was run"
    )


def _sole_cause(exc: BaseException) -> BaseException:
    # anyio and asyncio task groups wrap what one task raised; the member is the real failure.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno) if exc.errno is not None else None
    return f"error: {where}{what}" + (f"; {fix}" if fix else "")


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return a == b


def _one_line(message: str) -> str:
    text = visible(message)  # newlines and terminal controls from file contents or an upstream, escaped
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def port_number(text: str) -> int:
    """An argparse type for `--port`: a TCP port, or a usage error saying which numbers are allowed."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: any free port), got {port}")
    return port
