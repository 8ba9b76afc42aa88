"""The CLI never prints a traceback (SECURITY.md): every subcommand meets broken inputs with one line that
names the problem and the fix, and a non-zero exit status."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import mcp_gateway
from mcp_gateway.cli import main, run_command
from mcp_gateway.cli_errors import EXIT_INTERNAL, EXIT_USAGE, explain
from mcp_gateway.errors import CommandError, ConfigError
from tests._servers import serve_asgi

_TOKEN_ENV = "MCP_GATEWAY_TEST_PIN_TOKEN"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def write_config(directory: Path, url: str = "http://127.0.0.1:9/mcp", credentials: str = "") -> Path:
    (directory / "allow.toml").write_text(
        f'[servers.everything]\nurl = "{url}"\nserver_name = "everything"\ndefault_scopes = ["tools:call"]\n'
        + credentials
    )
    config = directory / "gateway.toml"
    config.write_text('allowlist = "allow.toml"\n[auth]\nissuer = "https://as.example"\n[audit]\ndatabase = "a.db"\n')
    return config


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", [["serve"], ["check-config"], ["allowlist", "check"], ["allowlist", "pin", "x"]])
def test_a_missing_config_file_is_named_with_the_option_that_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, err = run(capsys, *command, "--config", str(tmp_path / "nope.toml"))
    assert code == 2
    assert f"{tmp_path / 'nope.toml'}: (file): cannot read: No such file or directory" in err
    assert "pass --config PATH to use another file" in err


def test_a_directory_given_as_the_config_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "check-config", "--config", str(tmp_path))
    assert code == 2 and "Is a directory" in err


def test_invalid_toml_is_named_with_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[auth\n")
    code, err = run(capsys, "allowlist", "check", "--config", str(config))
    assert code == 2 and f"{config}: (syntax): not valid TOML" in err


def test_pin_of_an_unknown_server_lists_the_servers_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "allowlist", "pin", "everythng", "--config", str(write_config(tmp_path)))
    assert code == 2
    assert f"no [servers.everythng] in {tmp_path / 'allow.toml'} (servers: everything)" in err


def test_pin_when_the_credential_variable_is_unset_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_TOKEN_ENV, raising=False)
    credentials = f'[servers.everything.credentials]\ntype = "bearer"\ntoken_env = "{_TOKEN_ENV}"\n'
    code, err = run(
        capsys, "allowlist", "pin", "everything", "--config", str(write_config(tmp_path, credentials=credentials))
    )
    assert code == 2
    assert f"environment variable {_TOKEN_ENV} is not set; set it, then run this command again" in err


def test_pin_of_an_unreachable_upstream_says_it_cannot_reach_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/mcp"
    code, err = run(capsys, "allowlist", "pin", "everything", "--config", str(write_config(tmp_path, url)))
    assert code == 2
    assert f"cannot reach servers.everything at {url} (ConnectError" in err and "is it running" in err


@pytest.mark.anyio
async def test_pin_of_an_upstream_that_answers_badly_is_told_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anyio_backend: str
) -> None:
    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "no\x1b[2J\u202e"}})

    async def missing(request: Request) -> PlainTextResponse:
        return PlainTextResponse("not here", status_code=404)

    app = Starlette(routes=[Route("/mcp", refuse, methods=["POST"]), Route("/gone", missing, methods=["POST"])])
    async with serve_asgi(app) as base:
        for path, message in [("/mcp", "the upstream answered with an error"), ("/gone", "answered HTTP 404")]:
            config = write_config(tmp_path, f"{base}{path}")
            code = await asyncio.to_thread(main, ["allowlist", "pin", "everything", "--config", str(config)])
            err = capsys.readouterr().err
            assert code == 2 and message in err and "Traceback" not in err
    assert "\x1b" not in err and "\u202e" not in err


def test_token_and_issuer_with_a_missing_config_name_their_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "issuer.toml")
    code, err = run(capsys, "token", "--issuer-config", missing, "--client", "a", "--resource", "http://x/mcp")
    assert code == 2 and "pass --issuer-config PATH" in err
    code, err = run(capsys, "issuer", "--config", missing)
    assert code == 2 and "pass --config PATH" in err


def test_demo_in_a_directory_it_cannot_create_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    code, err = run(capsys, "demo", "--dir", str(tmp_path / "file" / "demo"))
    assert code == 2 and "Not a directory" in err


@pytest.mark.parametrize("option", ["--gateway-port", "--issuer-port", "--upstream-port"])
def test_demo_on_a_port_in_use_names_the_option_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], held_port: int, option: str
) -> None:
    ports = {"--gateway-port": closed_port(), "--issuer-port": closed_port(), "--upstream-port": closed_port()}
    ports[option] = held_port
    argv = [item for pair in ports.items() for item in (pair[0], str(pair[1]))]
    code, err = run(capsys, "demo", "--dir", str(tmp_path / "demo"), *argv)
    assert code == 2 and f"port {held_port} on 127.0.0.1 cannot be used" in err and f"pick another with {option}" in err


@pytest.mark.parametrize("command", [["serve", "--port"], ["issuer", "--port"], ["demo", "--gateway-port"]])
def test_a_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "99999"])
    assert exited.value.code == 2 and "a port is 0-65535" in capsys.readouterr().err


def test_audit_commands_with_bad_inputs_say_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "audit", "verify", "--database", str(tmp_path / "missing.db"))
    assert code == 2 and "no audit database" in err
    code, err = run(capsys, "audit", "query", "--database", str(tmp_path / "a.db"), "--since", "yesterday")
    assert code == 2 and "expected a duration like 30m" in err
    config = write_config(tmp_path)
    code, err = run(capsys, "audit", "export", "--config", str(config), "--output", str(tmp_path))
    assert code == 2 and "no audit database" in err


def test_an_unexpected_failure_is_one_line_asking_for_a_report(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("division by zero")

    assert run_command(argparse.Namespace(func=broken)) == EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert (
        err
        == "internal error: ZeroDivisionError: division by zero; please report this, with the command that was run\n"
    )


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (
            ConfigError("g.toml", "(file)", "cannot read: gone"),
            2,
            "configuration error: g.toml: (file): cannot read: gone",
        ),
        (CommandError("port 1 is in use; pick another"), 2, "error: port 1 is in use; pick another"),
        (
            PermissionError(errno.EACCES, "Permission denied", "/x.db"),
            2,
            "error: /x.db: Permission denied; check the file's permissions",
        ),
        (
            IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"),
            2,
            "error: /tmp: Is a directory; name a file, not a directory",
        ),
        (
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            2,
            "error: a file is not UTF-8 text (invalid start byte at byte 0); save it as UTF-8",
        ),
        (ValueError("bad --since\x1b[2J"), 2, "error: bad --since\\x1b[2J"),
        (ExceptionGroup("group", [CommandError("inner")]), 2, "error: inner"),
        (RuntimeError("x" * 500), 70, "internal error: RuntimeError: " + "x" * 199 + "…; please report this"),
    ],
)
def test_each_kind_of_failure_is_explained_on_one_escaped_line(exc: Exception, code: int, message: str) -> None:
    got_code, got = explain(exc, config_option=("--config", "other.toml"))
    assert (got_code, got[: len(message)]) == (code, message)
    assert "\n" not in got and "\x1b" not in got


def test_invalid_toml_from_any_reader_is_explained() -> None:
    try:
        tomllib.loads("[x\n")
    except tomllib.TOMLDecodeError as exc:
        code, message = explain(exc)
    assert code == EXIT_USAGE and message.startswith("error: not valid TOML: ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check-config", "--config", "{tmp}/nope.toml"], "pass --config PATH to use another file"),
        (["allowlist", "pin", "nope", "--config", "{tmp}/gateway.toml"], "no [servers.nope]"),
        (["token", "--issuer-config", "{tmp}", "--client", "a", "--resource", "r"], "Is a directory"),
        (["audit", "query", "--config", "{tmp}/gateway.toml", "--since", "soon"], "expected a duration"),
    ],
)
def test_real_processes_exit_2_with_one_line_and_no_traceback(tmp_path: Path, argv: list[str], message: str) -> None:
    write_config(tmp_path)
    root = str(Path(mcp_gateway.__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway.cli", *(a.format(tmp=tmp_path) for a in argv)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": root},
        timeout=60,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
