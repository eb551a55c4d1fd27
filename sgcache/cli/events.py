"""Sync verbs of `sgcache`: `events` (the watcher on its own) and `ctrl` (talk to the leader)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from .cli import build_config, common, setup_logging


async def run_events(config: Any, once: bool = False) -> dict[str, Any]:
    """Follow the event log (and run interval scans) until cancelled, or catch up once."""
    from .service import CacheService
    from .sync import SyncLoop
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


@click.command()
@common
@click.argument("command", type=click.Choice(["status", "poll", "scan"]))
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the answer.")
def ctrl(command: str, timeout: float, **kw: Any) -> None:
    """Ask the running sync leader: `status`, `poll` (answers when caught up), `scan`."""
    from .control import send
    config = build_config(kw)
    try:
        out = send(config, command, timeout=timeout)
    except (ConnectionError, OSError) as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    click.echo(json.dumps(out, default=str))
    if not out.get("ok"):
        sys.exit(1)


def register(main: click.Group) -> None:
    for cmd in (events, ctrl):
        main.add_command(cmd)
