"""`sgcache serve`: the api3 server (and, in the elected leader, the sync loop)."""

from __future__ import annotations

import logging
from typing import Any

import click

from .common import build_config, common, setup_logging


@click.command()
@common
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8010).")
@click.option("--workers", default=1, show_default=True, type=int)
@click.option("--no-sync", is_flag=True, help="No event watcher or interval scans here (write-through still runs).")
@click.option("--json-logs", is_flag=True, help="Structured JSON log lines.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Least severe level logged.")
def serve(host: str | None, port: int | None, workers: int, no_sync: bool, json_logs: bool, log_level: str,
          **kw: Any) -> None:
    """Serve the api3 protocol from the cache, passing through what it cannot answer."""
    config = build_config(kw, host=host, port=port, log_json=json_logs or None,
                          watch_events=False if no_sync else None)
    setup_logging(config.log_json, getattr(logging, log_level.upper()))
    from ..serve.server import run_server
    run_server(config, workers=workers)
