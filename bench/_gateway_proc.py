"""Runs one gateway process for the benchmark, with the durable SQLite audit sink or with no audit at all.

    python bench/_gateway_proc.py --config DIR/gateway.toml --audit sqlite|off [--profile FILE]

It serves exactly like `mcp-gateway serve` (uvicorn, uvloop, httptools, no access log, no server header);
the only difference is the `--audit off` baseline, which injects a sink that drops every record. That is a
real "no audit" mode for measuring what auditing costs, not a configuration anyone should deploy.
`--profile FILE` runs the whole process under cProfile and writes its stats to FILE on shutdown.
"""

from __future__ import annotations

import argparse
import sys


def _serve(config_path: str, audit: str) -> None:
    import uvicorn

    from mcp_gateway.app import create_app
    from mcp_gateway.audit.sink import NullAuditSink
    from mcp_gateway.config import load_config

    config = load_config(config_path)
    app = create_app(config, audit=NullAuditSink() if audit == "off" else None, tune_gc=True)
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
        # As `mcp-gateway serve` does: X-Forwarded-* is honoured only from configured proxies.
        proxy_headers=bool(config.trusted_proxies),
        forwarded_allow_ips=list(config.trusted_proxies) or None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True)
    parser.add_argument("--audit", choices=("sqlite", "off"), default="sqlite")
    parser.add_argument("--profile", default=None, help="write cProfile stats here when the process stops")
    args = parser.parse_args()
    if args.profile is None:
        _serve(args.config, args.audit)
        return 0
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        _serve(args.config, args.audit)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
