"""`serve --workers N`: a pre-fork parent that shares one listening socket with N gateway processes.

The parent binds the port, makes the session key when the config names none, and forks the workers; each
builds its own gateway (its own audit writer, upstream pools and limit-store connection) after the fork,
so no event loop, thread or connection crosses a fork. The kernel hands each new connection to whichever
worker accepts first. All workers open each other's sealed session ids because they hold the same key:
the one `session_key_env` names, or the parent's random one, inherited through the fork (it never enters
the environment, a file or a command line).

One SIGTERM (or SIGINT) to the parent is forwarded to every worker, each shuts down gracefully (uvicorn:
stop accepting, finish requests in flight, run the lifespan shutdown), and the parent exits 0 once all
have. A worker that exits on its own is a fault: the parent stops the others and exits 1, so the service
manager that started it sees the failure (and restarts the whole unit) instead of a silently smaller pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any, Final, NoReturn

from mcp_gateway.config import GatewayConfig, random_session_key
from mcp_gateway.errors import ConfigError

__all__ = ["check_workers", "serve_workers"]

logger = logging.getLogger("mcp_gateway.workers")

# The name under which each worker finds the parent's session key among the secrets handed to create_app.
_HANDED_DOWN_KEY: Final = "MCP_GATEWAY_WORKERS_SESSION_KEY"
_STOP_SIGNALS: Final = {signal.SIGTERM, signal.SIGINT}


def check_workers(config: GatewayConfig, workers: int, *, config_file: str) -> None:
    """Refuse a worker count the configuration cannot serve correctly (ConfigError → exit 2)."""
    if workers < 1:
        raise ConfigError(config_file, "--workers", "must be at least 1")
    if workers > 1 and config.audit.enabled:
        from mcp_gateway.audit.stores import audit_location

        audit = config.audit
        location = audit_location(url=audit.url, database=audit.database, base_dir=config.base_dir)
        # The SQLite log takes one writer: several processes appending would interleave one hash chain.
        if location.scheme == "sqlite":
            raise ConfigError(
                config_file,
                "audit",
                f"--workers {workers} needs an audit store that takes several writers, and the SQLite file "
                '([audit] database) takes one: use [audit] url = "postgresql://…" for --workers > 1, '
                "or run one worker",
            )


def serve_workers(config: GatewayConfig, workers: int, *, host: str, port: int, log_level: str = "info") -> int:
    """Serve `config` from `workers` processes on `host`:`port`, each served as `mcp-gateway serve` serves
    one (`transport.server.build_server`: the connection guard, its limits and metrics are per worker).

    Returns the parent's exit status: 0 after a requested stop, 1 if a worker died on its own.
    """
    import uvicorn

    if config.rate_limits.redis_url is None:
        logger.warning(
            "%d workers without [rate_limits] redis_url: rate limits and session caps are counted per worker",
            workers,
        )
    # The socket is bound once, here; the app string is never loaded (each worker builds its own gateway).
    sock = uvicorn.Config("mcp_gateway.app:create_app", host=host, port=port, log_level=log_level).bind_socket()
    sock.set_inheritable(True)
    worker_config, secrets = _shared_session_key(config)
    children: dict[int, int] = {}  # pid → worker number
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    def reload(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):  # `mcp-gateway reload` signals the parent: every worker re-reads the files
            _signal(pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    pid_file = config.path_for(config.pid_file) if config.pid_file else None
    status = 0
    try:
        for number in range(workers):
            if stopping:
                break
            # Blocked across the fork: the parent handles a stop only once it knows the new pid, and the
            # worker never runs the parent's handler.
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                pid = os.fork()
                if pid == 0:
                    _run_worker(worker_config, secrets, sock, host=host, port=port, log_level=log_level)
                children[pid] = number
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        sock.close()  # the workers hold it now
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.write_text(f"{os.getpid()}\n")
        logger.info("serving with %d workers (pids %s)", len(children), ", ".join(map(str, children)))
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            number = children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                logger.error("worker %d (pid %d) exited with status %d; stopping the others", number, pid, code)
                status = 1
                stop(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.unlink()
    return status


def _shared_session_key(config: GatewayConfig) -> tuple[GatewayConfig, Mapping[str, str]]:
    """The config and secrets every worker builds its gateway from, so that all seal with one key."""
    secrets = dict(os.environ)
    if config.session_key_env is not None:
        return config, secrets  # every worker reads the same variable
    secrets[_HANDED_DOWN_KEY] = random_session_key().hex()
    return config.model_copy(update={"session_key_env": _HANDED_DOWN_KEY}), secrets


def _run_worker(
    config: GatewayConfig, secrets: Mapping[str, str], sock: socket.socket, *, host: str, port: int, log_level: str
) -> NoReturn:
    """The forked worker: build a gateway, serve the shared socket until told to stop, exit."""
    server: list[Any] = []

    def stop_early(signum: int, frame: FrameType | None) -> None:
        # A stop that arrives before uvicorn has installed its own handlers still stops this worker.
        requested.append(signum)
        if server:
            server[0].should_exit = True

    requested: list[int] = []
    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop_early)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the server is up: nothing to reload yet
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    code = 1
    try:
        from mcp_gateway.app import create_app
        from mcp_gateway.server import build_server

        app = create_app(config, tune_gc=True, secrets=secrets)
        server.append(build_server(app, config, host=host, port=port, log_level=log_level, owns_pid_file=False))
        if requested:
            server[0].should_exit = True
        # uvicorn re-raises the signal that stopped it once it has shut down, into `stop_early`: the worker
        # then reports a clean stop with its exit status instead of dying of the signal.
        server[0].run(sockets=[sock])
        code = 0 if server[0].started or requested else 3
    except BaseException:
        logger.exception("worker failed")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)
