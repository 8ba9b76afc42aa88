"""The auditor's commands: `mcp-gateway audit query | verify | export | copy`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from mcp_gateway.audit.query import OUTPUT_FIELDS, QueryFilters, VerifyResult, parse_time
from mcp_gateway.audit.safe_text import csv_record, json_line, visible
from mcp_gateway.audit.store import AuditLocation, AuditReadError, SchemaError
from mcp_gateway.audit.stores import audit_location, open_audit_reader, store_for

EXIT_OK: Final = 0
EXIT_BROKEN: Final = 1
EXIT_USAGE: Final = 2

_FILTERS: Final = (
    ("--agent", "agent_id"),
    ("--user", "delegating_user"),
    ("--server", "mcp_server"),
    ("--tool", "tool"),
    ("--decision", "decision"),
    ("--outcome", "outcome"),
    ("--session", "session_id"),
)


class _Refused(Exception):
    """A problem with the command line or the files it names; printed, exit status 2."""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` command group to a top-level `mcp-gateway` parser."""
    audit = subparsers.add_parser("audit", help="query, verify and export the audit log")
    audit.set_defaults(func=lambda args: _print_help(audit))
    commands = audit.add_subparsers(metavar="COMMAND")

    q = commands.add_parser(
        "query",
        help="one row per tool call (intent and outcome merged), oldest first",
        description="Print audit rows, one per call. With --limit N, the most recent N, still oldest first. "
        "An intent without an outcome (gateway killed, or the call still running) shows outcome 'aborted'.",
    )
    _add_location(q)
    for flag, field in _FILTERS:
        choices = ("allow", "deny", "step_up") if flag == "--decision" else None
        q.add_argument(flag, metavar=flag[2:].upper(), choices=choices, help=f"only rows whose {field} is exactly this")
    q.add_argument("--since", metavar="WHEN", help="30m, 1h, 2d, 1w ago, or an ISO 8601 time (UTC if no offset)")
    q.add_argument("--until", metavar="WHEN", help="same forms as --since; exclusive")
    q.add_argument("--limit", metavar="N", type=int, help="only the most recent N rows")
    q.add_argument("--format", choices=("table", "json", "csv"), default="table", help="json: one object per line")
    q.set_defaults(func=run_query)

    v = commands.add_parser(
        "verify",
        help="check the hash chain; exit 0 intact, 1 broken, 2 no database",
        description="Walk every record's hash link and compare the tail with the head checkpoint. Keep the "
        "printed head hash somewhere else: a rewrite of the whole file is only caught against such a copy.",
    )
    _add_location(v)
    v.set_defaults(func=run_verify)

    e = commands.add_parser(
        "export",
        help="raw records as JSON lines for a SIEM, resumable",
        description="Export intent, outcome and event records after a cursor, one JSON object per line, with "
        "seq, prev_hash and hash. Delivery is at least once: deduplicate on seq.",
    )
    _add_location(e)
    cursor = e.add_mutually_exclusive_group()
    cursor.add_argument("--after", metavar="EVENT_ID", help="resume after this call's first record")
    cursor.add_argument("--after-seq", metavar="SEQ", type=int, help="resume after this seq (printed on stderr)")
    e.add_argument("--output", metavar="FILE", help="append to FILE instead of writing to stdout")
    e.set_defaults(func=run_export)

    c = commands.add_parser(
        "copy",
        help="copy an embedded SQLite log into a shared store, as a chain of its own",
        description="Copy every record of a SQLite audit log, with its seq and hashes, into a shared store "
        "(postgresql://...) as one chain, so `audit verify` of the copy checks the original links. The source "
        "must verify. Running it again copies only what the source gained since.",
    )
    c.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH", help="the SQLite log to copy")
    c.add_argument("--to", dest="target", required=True, metavar="URL", help="the shared store, e.g. postgresql://...")
    c.set_defaults(func=run_copy)


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="./gateway.toml", metavar="PATH", help="gateway.toml (default: %(default)s)"
    )
    parser.add_argument("--database", metavar="PATH", help="the audit database; overrides [audit] database")


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _configured_location(config_path: str) -> AuditLocation:
    """`[audit] url`, else `[audit] database` relative to gateway.toml, without loading anything else: an
    auditor must be able to read the log even when an allowlist entry is broken."""
    path = Path(config_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Refused(f"no config file at {path}; pass --config PATH or --database PATH") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _Refused(f"{path}: cannot read: {exc}") from exc
    audit = data.get("audit", {})
    url = audit.get("url") if isinstance(audit, dict) else None
    if url is not None and (not isinstance(url, str) or not url):
        raise _Refused(f"{path}: audit.url: expected a URL string")
    database = audit.get("database", "audit.db") if isinstance(audit, dict) else None
    if not isinstance(database, str) or not database:
        raise _Refused(f"{path}: audit.database: expected a path string")
    return audit_location(url=url, database=database, base_dir=path.resolve().parent)


def _location(args: argparse.Namespace) -> AuditLocation:
    """The log `--database` names (a SQLite file), else the one gateway.toml's `[audit]` names."""
    if args.database:
        return AuditLocation("sqlite", args.database)
    return _configured_location(args.config)


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (_Refused, FileNotFoundError, LookupError, SchemaError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        except ValueError as exc:  # a record that no longer parses: the log was edited
            print(f"error: {exc}", file=sys.stderr)
        except AuditReadError as exc:
            print(
                f"error: cannot read the audit database: {exc} (`mcp-gateway audit verify` checks it)", file=sys.stderr
            )
        except BrokenPipeError:
            # `audit query | head`: the reader has what it wanted. Point stdout at /dev/null so the
            # interpreter's final flush does not raise again (Python docs, "Note on SIGPIPE").
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        return EXIT_USAGE

    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run


def _rows(location: AuditLocation, filters: QueryFilters) -> Iterator[dict[str, Any]]:
    # The log is opened at the first row, as it always was: a table's header line comes first.
    yield from open_audit_reader(location).query(filters)


@_guarded
def run_query(args: argparse.Namespace) -> int:
    """`audit query`: print matching rows as a table, JSON lines or CSV."""
    now = time.time()
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    if args.limit is not None and args.limit < 0:
        raise _Refused("--limit must be zero or more")
    filters = QueryFilters(
        agent=args.agent,
        user=args.user,
        server=args.server,
        tool=args.tool,
        decision=args.decision,
        outcome=args.outcome,
        session=args.session,
        since=since,
        until=until,
        limit=args.limit,
    )
    rows = _rows(_location(args), filters)
    out = sys.stdout
    if args.format == "json":
        for row in rows:
            # ASCII-only: log fields carry client-chosen text, which must not reach a terminal raw.
            out.write(json_line(row) + "\n")
    elif args.format == "csv":
        _write_csv(rows, out)
    else:
        _write_table(rows, out, shutil.get_terminal_size((120, 24)).columns)
    return EXIT_OK


def _write_csv(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    # RFC 4180 records with neutralised cells (safe_text.csv_cell): a client's text can neither end a
    # record nor run as a formula in the auditor's spreadsheet.
    out.write(csv_record(OUTPUT_FIELDS))
    for row in rows:
        out.write(csv_record(row[name] for name in OUTPUT_FIELDS))


_Column = tuple[str, int, float, Callable[[dict[str, Any]], str]]  # title, fixed width or 0, weight, text
_OUTCOME_WIDTH: Final = max(map(len, ("ok", "tool_error", "upstream_error", "timeout", "denied", "aborted")))


def _layout(terminal_width: int) -> list[tuple[str, int, Callable[[dict[str, Any]], str]]]:
    """Columns for an 80-120 column terminal; below 100, HTTP status and latency give way to identities."""
    width = min(max(terminal_width, 80), 120)
    wide = width >= 100
    columns: list[_Column] = [
        ("TIME", 24, 0, lambda r: str(r["timestamp"]))
        if wide
        else ("TIME", 19, 0, lambda r: str(r["timestamp"])[:19].replace("T", " ")),
        ("AGENT", 0, 1.0, lambda r: r["agent_id"] or ""),
        ("USER", 0, 1.0, lambda r: r["delegating_user"] or ""),
        ("SERVER", 0, 1.0, lambda r: r["mcp_server"] or ""),
        (
            "TOOL/METHOD",
            0,
            1.4,
            lambda r: r["tool"] or (f"<{r['event_type']}>" if r["event_type"] else r["method"] or ""),
        ),
        ("DECISION", 8, 0, lambda r: r["decision"] or ""),
        # Fixed like DECISION: outcomes are a closed vocabulary ("upstream_error" is the longest), and a
        # shortened "tool_er…" would hide the one thing the auditor scans this column for.
        ("OUTCOME", _OUTCOME_WIDTH, 0, lambda r: r["outcome"] or ""),
    ]
    if wide:
        columns.append(("HTTP", 4, 0, lambda r: "" if r["http_status"] is None else str(r["http_status"])))
        columns.append(("MS", 8, 0, lambda r: "" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"))
    flexible = width - sum(fixed for _, fixed, _, _ in columns) - (len(columns) - 1)
    weights = sum(weight for _, _, weight, _ in columns)
    return [(title, fixed or int(flexible * weight / weights), get) for title, fixed, weight, get in columns]


def _printable(text: str) -> str:
    # Control and format characters (ANSI escapes, bidi overrides) from a client must not steer the
    # auditor's terminal: they are shown as visible escapes (`\x1b`, `\u202e`) instead.
    return visible(text)


def _fit(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _write_table(rows: Iterable[dict[str, Any]], out: TextIO, terminal_width: int) -> None:
    layout = _layout(terminal_width)
    out.write(" ".join(title.ljust(width) for title, width, _ in layout).rstrip() + "\n")
    count = 0
    for row in rows:
        out.write(" ".join(_fit(get(row), width).ljust(width) for _, width, get in layout).rstrip() + "\n")
        count += 1
    print(f"({count} row{'s' if count != 1 else ''})", file=sys.stderr)


@_guarded
def run_verify(args: argparse.Namespace) -> int:
    """`audit verify`: exit 0 if the chain is intact, 1 if broken (naming the first broken link)."""
    result = open_audit_reader(_location(args)).verify()
    if result.chains is not None:
        return _print_chains(result)
    if result.ok:
        print(f"audit log intact: {result.records} records; head seq {result.head_seq} hash {result.head_hash}")
        return EXIT_OK
    print(f"audit log BROKEN at seq {result.broken_seq}: {result.reason}")
    print(f"last intact record: seq {result.head_seq} hash {result.head_hash} ({result.records} records checked)")
    return EXIT_BROKEN


def _print_chains(result: VerifyResult) -> int:
    """A log of several chains: one line for the whole, then one per chain."""
    chains = result.chains or ()
    if result.ok:
        print(f"audit log intact: {result.records} records in {len(chains)} chains; heads digest {result.head_hash}")
    else:
        broken = sum(1 for verdict in chains if not verdict.result.ok)
        print(f"audit log BROKEN: {broken} of {len(chains)} chains broken ({result.records} records checked)")
    for verdict in chains:
        chain = verdict.result
        if chain.ok:
            head = f"head seq {chain.head_seq} hash {chain.head_hash}"
            print(f"chain {verdict.chain_id}: intact, {chain.records} records; {head}")
        else:
            print(
                f"chain {verdict.chain_id}: BROKEN at seq {chain.broken_seq}: {chain.reason}; last intact record: "
                f"seq {chain.head_seq} hash {chain.head_hash} ({chain.records} records checked)"
            )
    return EXIT_OK if result.ok else EXIT_BROKEN


@_guarded
def run_copy(args: argparse.Namespace) -> int:
    """`audit copy --from sqlite:PATH --to URL`: the embedded log into a shared store, verifiably."""
    scheme, _, source = str(args.source).partition(":")
    if scheme != "sqlite" or not source:
        raise _Refused(f"--from must be sqlite:PATH, not {args.source!r}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no audit database at {path}")
    target = audit_location(url=args.target, database="", base_dir=".")
    copy_in = getattr(store_for(target), "copy_in", None)
    if copy_in is None:
        raise _Refused(f"the {target.scheme} store cannot take a copy of a SQLite log")
    result = copy_in(path, target)
    if result.copied:
        print(f"copied {result.copied} records into chain {result.chain_id}; it holds {result.total} records")
    else:
        print(f"nothing to copy: chain {result.chain_id} already holds all {result.total} records")
    return EXIT_OK


@_guarded
def run_export(args: argparse.Namespace) -> int:
    """`audit export`: JSON lines after a cursor; prints the cursor to resume from on stderr."""
    reader = open_audit_reader(_location(args))  # raises before --output is created if there is no log
    if args.output:
        with open(args.output, "a", encoding="utf-8") as out:
            result = reader.export(out, after_seq=args.after_seq, after_event_id=args.after)
    else:
        result = reader.export(sys.stdout, after_seq=args.after_seq, after_event_id=args.after)
    resume = f"; resume with --after-seq {result.last_seq}" if result.last_seq is not None else ""
    print(f"exported {result.count} records{resume}", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mcp_gateway.audit.cli audit ...`: the audit commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="mcp-gateway")
    add_commands(parser.add_subparsers(metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
