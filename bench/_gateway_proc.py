"""Runs one gateway process for the benchmark, with the durable SQLite audit sink or with no audit at all.

    python bench/_gateway_proc.py --config DIR/gateway.toml --audit sqlite|off [--profile FILE] [--phases]

It serves exactly like `mcp-gateway serve` (uvicorn, uvloop, httptools, no access log, no server header);
the only difference is the `--audit off` baseline, which injects a sink that drops every record. That is a
real "no audit" mode for measuring what auditing costs, not a configuration anyone should deploy.
`--profile FILE` runs the whole process under cProfile and writes its stats to FILE on shutdown.
`--phases` times the pipeline's steps with the event loop thread's CPU clock and serves the totals at
`GET /__phases` (see bench/_phases.py); without it nothing is wrapped.
It also serves a checkout from before `build_server` (`overhead.py --root`): then with uvicorn.run and the
same flags.
"""

from __future__ import annotations

import argparse
import sys


def _serve(config_path: str, audit: str, phases: bool = False) -> None:
    from mcp_gateway.app import create_app
    from mcp_gateway.audit.sink import AuditSink, NullAuditSink
    from mcp_gateway.audit.sqlite import SQLiteAuditSink
    from mcp_gateway.config import load_config

    if phases:
        import _phases

        _phases.install()
    config = load_config(config_path)
    sink: AuditSink = NullAuditSink()
    if audit != "off":
        # What create_app would build from the config; built here so that its counters can be printed when
        # it closes (uvicorn re-raises SIGTERM after shutting down, so nothing after uvicorn.run runs).
        sqlite_sink = SQLiteAuditSink(config.path_for(config.audit.database), synchronous=config.audit.synchronous)
        close = sqlite_sink.aclose

        async def close_and_report() -> None:
            await close()
            # overhead.py reads this line from the process's log: records per commit and per sync.
            print(f"audit sink stats: {sqlite_sink.stats}", file=sys.stderr, flush=True)

        sqlite_sink.aclose = close_and_report  # type: ignore[method-assign]
        sink = sqlite_sink
    app = create_app(config, audit=sink, tune_gc=True)
    if phases:
        app = _phases.wrap_app(app)
    try:
        from mcp_gateway.server import build_server
    except ImportError:  # a checkout from before it: serve as its `mcp-gateway serve` did
        import uvicorn

        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=bool(config.trusted_proxies),
            forwarded_allow_ips=list(config.trusted_proxies) or None,
        )
        return
    # The very server `mcp-gateway serve` runs (connection limits included).
    build_server(app, config, host=config.host, port=config.port, log_level="warning").run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True)
    parser.add_argument("--audit", choices=("sqlite", "off"), default="sqlite")
    parser.add_argument("--profile", default=None, help="write cProfile stats here when the process stops")
    parser.add_argument("--phases", action="store_true", help="time the pipeline's steps; totals at GET /__phases")
    args = parser.parse_args()
    if args.profile is None:
        _serve(args.config, args.audit, args.phases)
        return 0
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        _serve(args.config, args.audit, args.phases)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
