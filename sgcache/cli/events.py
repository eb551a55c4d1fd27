"""`sgcache events`: follow the event log (and run interval scans) without serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from .common import build_config, common, setup_logging


async def run_events(config: Any, once: bool = False) -> dict[str, Any]:
    """Follow the event log (and run interval scans) until cancelled, or catch up once."""
    from ..runtime import CacheService
    from ..sync.loop import SyncLoop
    svc = await CacheService.open(config, create=False)
    try:
        loop = SyncLoop(svc)
        if once:
            await loop.watcher.start()
            n = await loop.watcher.catch_up()
            return {"applied_events": n, **loop.status()}
        await loop.run()
        return {}
    finally:
        await svc.aclose()


@click.command()
@common
@click.option("--once", is_flag=True, help="Catch up with the log once and exit (no leader lock).")
@click.option("--json-logs", is_flag=True, help="Structured JSON log lines.")
def events(once: bool, json_logs: bool, **kw: Any) -> None:
    """Follow the site's event log (and run interval scans) without serving."""
    config = build_config(kw, log_json=json_logs or None)
    setup_logging(config.log_json)
    try:
        out = asyncio.run(run_events(config, once=once))
    except KeyboardInterrupt:  # pragma: no cover
        return
    if once:
        click.echo(json.dumps(out, default=str))
