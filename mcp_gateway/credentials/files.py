"""Secrets read from files and re-read when the file changes, so that rotation needs no restart."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from mcp_gateway.errors import ConfigError

logger = logging.getLogger("mcp_gateway.credentials")

_T = TypeVar("_T")
_MAX_SECRET_FILE_BYTES = 64 * 1024
_Stamp = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): a rename-into-place changes the inode


def _stamp(path: Path) -> _Stamp:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def secret_text(raw: bytes) -> str:
    """A secret file's value: UTF-8 text without the surrounding whitespace, one line, no NUL.

    Raises ValueError naming the problem (never the value).
    """
    if len(raw) > _MAX_SECRET_FILE_BYTES:
        raise ValueError("the file is larger than 64 KiB")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None
    if not text:
        raise ValueError("the file is empty")
    if any(c in text for c in "\r\n\0"):
        # A header value with CR or LF would split the request (RFC 9110 §5.5).
        raise ValueError("the secret spans several lines or holds a NUL")
    return text


class WatchedFile(Generic[_T]):
    """A value parsed from a file, parsed again whenever the file changes (one `stat` per `current()`).

    A replacement that cannot be read or parsed is logged and ignored: the last good value keeps serving,
    so a half-written rotation never takes an upstream down. `previous` is the value it replaced.
    """

    __slots__ = ("_parse", "_stamp", "path", "previous", "value")

    def __init__(self, path: Path, parse: Callable[[bytes], _T], *, file: str, key: str) -> None:
        self.path = path
        self._parse = parse
        try:
            self._stamp = _stamp(path)
            self.value: _T = parse(path.read_bytes())
        except OSError as exc:
            raise ConfigError(file, key, f"cannot read {path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ConfigError(file, key, f"{path}: {exc}") from exc
        self.previous: _T | None = None

    def current(self) -> _T:
        try:
            stamp = _stamp(self.path)
        except OSError:
            return self.value  # mid-rotation (removed before the new one is in place): keep the last good one
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                value = self._parse(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                logger.warning("ignoring unusable replacement of %s: %s", self.path, exc)
            else:
                self.previous, self.value = self.value, value
        return self.value


def resolve_path(base_dir: str, relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else Path(base_dir) / path


def env_secret(env: Mapping[str, str], name: str, *, key: str) -> str:
    """A secret named by a `*_env` key, checked like a file's; ConfigError if unset or unusable."""
    value = env.get(name)
    if not value:
        raise ConfigError("server_allowlist.toml", key, f"environment variable {name} is not set")
    try:
        return secret_text(value.encode("utf-8"))
    except ValueError as exc:
        raise ConfigError("server_allowlist.toml", key, f"{name}: {exc}") from exc
