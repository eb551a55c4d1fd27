"""`sgcache rebuild TYPES`: re-import types while the servers keep serving."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from .common import build_config, common, setup_logging
from .validate import opened_existing, run_checked, split_names


@click.command()
@common
@click.argument("types", nargs=-1, required=True)
@click.option("--grace", default=2.0, show_default=True,
              help="Seconds between marking the types and touching rows (servers see the mark).")
@click.option("--clear", is_flag=True, help="Only remove the types' rebuild marks (after a failed rebuild).")
def rebuild(types: tuple[str, ...], grace: float, clear: bool, **kw: Any) -> None:
    """Re-import entity types while the servers keep serving (their reads go to the site meanwhile)."""
    setup_logging()
    from ..sync.rebuild import clear_marks
    from ..sync.rebuild import rebuild as run_rebuild
    config = build_config(kw)
    wanted = split_names(types) or []

    async def run() -> Any:
        async with opened_existing(config) as svc:
            if clear:
                await asyncio.to_thread(clear_marks, svc.store, wanted)
                return None
            return await run_rebuild(svc.store, svc.upstream, wanted, grace=grace, page_size=config.page_size,
                                     concurrency=config.scan_concurrency)
    res = run_checked(run())
    if res is None:
        click.echo(f"cleared rebuild marks of {', '.join(wanted)}")
        return
    for t in res.types:
        click.echo(f"{t:<24} {res.rows[t]} rows, {res.removed[t]} removed")
    click.echo(f"rebuilt {len(res.types)} types in {res.seconds:.1f}s")
