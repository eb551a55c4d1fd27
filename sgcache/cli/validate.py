"""`sgcache validate counts|data`: prove the cache against the site (thin wrappers).

Exit codes, for cron and CI: 0 the cache matches the site; 1 differences were found
(with `--repair`, they were repaired and a re-check is clean); 2 differences remain,
or the check could not run (no cache, site unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any, AsyncIterator, Callable, Coroutine

import click

from ..config import Config
from .common import build_config, common, setup_logging


@contextlib.asynccontextmanager
async def opened_existing(config: Config) -> AsyncIterator[Any]:
    """An existing cache (never creates one: validating an empty database is a mistake)."""
    from ..runtime import CacheService
    try:
        svc = await CacheService.open(config, create=False)
    except RuntimeError as e:  # no cache in this database yet
        raise CannotRun(str(e)) from None
    try:
        yield svc
    finally:
        await svc.aclose()


class CannotRun(click.ClickException):
    """The check could not run at all (no cache, site unreachable): exit 2, like remaining differences."""

    exit_code = 2


def run_checked(coro: Coroutine[Any, Any, Any]) -> Any:
    from ..protocol import errors
    try:
        return asyncio.run(coro)
    except errors.Fault as e:
        raise CannotRun(f"the site answered: {e.message}") from None
    except ValueError as e:  # an unknown type, bad filters
        raise click.UsageError(str(e)) from None


def split_names(values: tuple[str, ...]) -> list[str] | None:
    out = [v for item in values for v in item.split(",") if v]
    return out or None


def _finish(reports: list[Any], text: str, as_json: bool,
            recheck: Callable[[], Coroutine[Any, Any, list[Any]]] | None) -> None:
    """Print the reports and exit with the documented code."""
    ok = all(r.ok for r in reports)
    still_bad: list[Any] = []
    if not ok and recheck is not None:
        still_bad = [r for r in run_checked(recheck()) if not r.ok]
    if as_json:
        click.echo(json.dumps({"ok": ok, "reports": [r.to_json() for r in reports],
                               "still_differing": [r.to_json() for r in still_bad]}, indent=1, default=str))
    else:
        click.echo(text)
        if recheck is not None and not ok:
            click.echo("after repair: " + ("clean" if not still_bad else
                                           "still differing: " + ", ".join(r.entity_type for r in still_bad)))
    sys.exit(0 if ok else 2 if still_bad else 1)


@click.group()
def validate() -> None:
    """Compare the cache with the site; exit non-zero on a mismatch."""


@validate.command("counts")
@common
@click.argument("types", nargs=-1)
@click.option("--repair", is_flag=True, help="Re-read differing entities from the site and store them.")
@click.option("--settle", default=1.0, show_default=True, help="Seconds before re-checking differences.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate_counts_cmd(types: tuple[str, ...], repair: bool, settle: float, as_json: bool, **kw: Any) -> None:
    """Per-type active and retired counts against the site, listing missing and extra ids."""
    setup_logging()
    from ..sync.validate import format_counts, validate_counts
    config = build_config(kw)
    wanted = split_names(types)

    async def run(do_repair: bool) -> list[Any]:
        async with opened_existing(config) as svc:
            return await validate_counts(svc.store, svc.upstream, wanted, settle=settle, do_repair=do_repair)
    reports = run_checked(run(repair))
    bad = [r.entity_type for r in reports if not r.ok]

    async def recheck() -> list[Any]:
        async with opened_existing(config) as svc:
            return await validate_counts(svc.store, svc.upstream, bad, settle=settle)
    _finish(reports, format_counts(reports), as_json, recheck if repair else None)


@validate.command("data")
@common
@click.argument("types", nargs=-1)
@click.option("--filters", "filters_json", help='Filters as JSON: [["code","is","x"]] or the wire form.')
@click.option("--fields", "fields_opt", multiple=True, help="Fields to compare (default: all cached).")
@click.option("--limit", type=int, help="Compare one page of this many entities (by id).")
@click.option("--page", default=1, show_default=True, type=int, help="Which page, with --limit.")
@click.option("--retired", is_flag=True, help="Compare retired entities instead of active ones.")
@click.option("--repair", is_flag=True, help="Re-read differing entities from the site and store them.")
@click.option("--settle", default=1.0, show_default=True, help="Seconds before re-checking differences.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate_data_cmd(types: tuple[str, ...], filters_json: str | None, fields_opt: tuple[str, ...],
                      limit: int | None, page: int, retired: bool, repair: bool, settle: float,
                      as_json: bool, **kw: Any) -> None:
    """Field-by-field comparison of entities, printing each difference."""
    setup_logging()
    from ..sync.validate import format_data, validate_data
    config = build_config(kw)
    wanted = split_names(types)
    fields = split_names(fields_opt)
    try:
        filters = json.loads(filters_json) if filters_json else None
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--filters")
    opts: dict[str, Any] = dict(filters=filters, fields=fields, limit=limit, page=page, retired=retired,
                                settle=settle)

    async def run(types_: list[str] | None, do_repair: bool) -> list[Any]:
        async with opened_existing(config) as svc:
            return await validate_data(svc.store, svc.upstream, types_, do_repair=do_repair, **opts)
    reports = run_checked(run(wanted, repair))
    bad = [r.entity_type for r in reports if not r.ok]
    _finish(reports, format_data(reports), as_json, (lambda: run(bad, False)) if repair else None)
