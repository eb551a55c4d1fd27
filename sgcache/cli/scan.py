"""`sgcache scan [--full]`: load the cache from the site, with a progress bar per type."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from ..config import Config
from .common import build_config, common, opened, setup_logging


async def run_scan(config: Config, full: bool, types: list[str] | None, projects: list[int] | None,
                   show_progress: bool = True) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from ..sync.interval_scan import Scanner
    from ..sync.refresh import Refresher
    from ..sync.scan import full_scan
    async with opened(config) as svc:
        with Progress(TextColumn("{task.description:>24}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), disable=not show_progress, transient=False) as bar:
            tasks: dict[str, Any] = {}

            def progress(etype: str, n: int) -> None:
                if etype not in tasks:
                    tasks[etype] = bar.add_task(etype, total=None)
                bar.advance(tasks[etype], n)

            if full or types or projects:
                return await full_scan(svc.upstream, svc.store, types, projects, progress)
            # The serving leader's scan: retired-set comparison and the other side of links too.
            scanner = Scanner(svc.store, svc.upstream, Refresher(svc.store, svc.upstream),
                              page_size=config.page_size)
            return await scanner.run(progress)


@click.command()
@common
@click.option("--full", is_flag=True, help="Load everything, not just what changed.")
@click.option("--types", help="Comma-separated entity types (full scan only).")
@click.option("--projects", help="Comma-separated project ids (full scan only).")
def scan(full: bool, types: str | None, projects: str | None, **kw: Any) -> None:
    """Load the cache from the site: `--full`, or what changed since the last scan."""
    setup_logging()
    config = build_config(kw)
    res = asyncio.run(run_scan(config, full, types.split(",") if types else None,
                               [int(p) for p in projects.split(",")] if projects else None))
    click.echo(f"{res.kind} scan: {sum(res.rows.values())} rows in {res.seconds:.1f}s")
