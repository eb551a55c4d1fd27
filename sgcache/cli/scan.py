"""`sgcache scan [--full]`: load the cache from the site, with a progress bar per type.

A full scan's bars show each type's total (the site's count of active rows), its rate and
the time left; a resumed scan says so and starts each bar at what earlier runs loaded.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import click

from ..config import Config
from .common import build_config, common, opened, setup_logging


#: How long the scan's writer thread may hold the GIL while the event loop waits for it
#: (CPython's default is 5 ms): the loop sends the next page request as soon as a slot is
#: free, and each wait behind rows being built is a slot idle. At `--latency 0.15`, 200k
#: site, two alternating rounds: 8,433 -> 8,715 and 8,685 -> 9,029 entities/s.
SCAN_GIL_SWITCH_S = 0.0005


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Entities per second of this run (rich's own speed column speaks bytes)."""

        def render(self, task: Any) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            n = task.completed - task.fields.get("earlier", 0)
            speed = n / elapsed if elapsed and n > 0 else None
            return Text(f"{speed:>8,.0f}/s" if speed else f"{'':>8}/s", style="progress.data.speed")
    return RateColumn()


async def run_scan(config: Config, full: bool, types: list[str] | None, projects: list[int] | None,
                   show_progress: bool = True) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..sync.interval_scan import Scanner
    from ..sync.refresh import Refresher
    from ..sync.scan import full_scan
    async with opened(config) as svc:
        with Progress(TextColumn("{task.description:>32}"), BarColumn(), MofNCompleteColumn(), _rate_column(),
                      TimeElapsedColumn(), TimeRemainingColumn(), disable=not show_progress,
                      transient=False, refresh_per_second=2) as bar:  # a redraw costs the scan CPU
            tasks: dict[str, Any] = {}

            def planned(etype: str, total: int | None, done: int, resumed: bool) -> None:
                label = f"{etype} (resumed)" if resumed and done else etype
                tasks[etype] = bar.add_task(label, total=max(total, done) if total is not None else None,
                                            completed=done, earlier=done)

            def progress(etype: str, n: int) -> None:
                if etype not in tasks:
                    tasks[etype] = bar.add_task(etype, total=None, earlier=0)
                task = tasks[etype]
                bar.advance(task, n)
                t = next(x for x in bar.tasks if x.id == task)
                if t.total is not None and t.completed > t.total:
                    bar.update(task, total=t.completed)  # retired rows: the count covers active ones

            if full or types or projects:
                # A bulk load makes millions of short-lived, acyclic objects: the collector's
                # passes over everything already loaded (schema, tables) are pure cost here.
                gc.freeze()
                threshold = gc.get_threshold()
                gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
                switch = sys.getswitchinterval()
                sys.setswitchinterval(SCAN_GIL_SWITCH_S)
                try:
                    res = await full_scan(svc.upstream, svc.store, types, projects, progress,
                                          config.scan_page_size or None, concurrency=config.scan_concurrency,
                                          resume=True, planned=planned)
                finally:
                    gc.set_threshold(*threshold)
                    sys.setswitchinterval(switch)
                for task in tasks.values():  # done: each bar ends full, whatever the count said
                    t = next(x for x in bar.tasks if x.id == task)
                    bar.update(task, total=t.completed)
                return res
            # The serving leader's scan: retired-set comparison and the other side of links too.
            scanner = Scanner(svc.store, svc.upstream, Refresher(svc.store, svc.upstream),
                              page_size=config.page_size)
            return await scanner.run(progress)


@click.command()
@common
@click.option("--full", is_flag=True, help="Load everything, not just what changed (resumes an interrupted one).")
@click.option("--types", help="Comma-separated entity types (full scan only).")
@click.option("--projects", help="Comma-separated project ids (full scan only).")
def scan(full: bool, types: str | None, projects: str | None, **kw: Any) -> None:
    """Load the cache from the site: `--full`, or what changed since the last scan."""
    setup_logging()
    config = build_config(kw)
    res = asyncio.run(run_scan(config, full, types.split(",") if types else None,
                               [int(p) for p in projects.split(",")] if projects else None))
    resumed = sum(getattr(res, "resumed", {}).values())
    click.echo(f"{res.kind} scan: {sum(res.rows.values())} rows in {res.seconds:.1f}s"
               + (f" (resumed the scan started at {res.started_at}: {resumed} rows were loaded by "
                  "earlier runs)" if resumed else ""))
