"""Cache verbs of the `sgcache` command: thin wrappers over library calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any, AsyncIterator

import click

from ..config import Config, load_config
from ..schema import Schema, load_rules

_COMMON = [
    click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON or TOML config file."),
    click.option("--shotgun-url", help="The site's base URL (SGCACHE_SHOTGUN_URL)."),
    click.option("--script-name", help="Script name the cache syncs with (SGCACHE_SCRIPT_NAME)."),
    click.option("--script-key", help="Its key (SGCACHE_SCRIPT_KEY); prefer the environment."),
    click.option("--db-url", help="SQLAlchemy URL (SGCACHE_DB_URL); default SQLite in the data dir."),
    click.option("--data-dir", help="Where the SQLite cache and control socket live (SGCACHE_DATA_DIR)."),
    click.option("--schema", help="Chosen schema JSON (SGCACHE_SCHEMA); default the whole site."),
    click.option("--rules", help="Rules file selecting types/fields from the schema."),
]


def common(fn: Any) -> Any:
    for opt in reversed(_COMMON):
        fn = opt(fn)
    return fn


def build_config(kw: dict[str, Any], **extra: Any) -> Config:
    keys = ("shotgun_url", "script_name", "script_key", "db_url", "data_dir", "schema", "rules")
    overrides = {k: kw.pop(k, None) for k in keys}
    overrides.update(extra)
    return load_config(kw.pop("config_file", None), overrides=overrides)


def setup_logging(json_logs: bool = False, level: int = logging.INFO) -> None:
    from ..logs import configure
    configure(json_logs=json_logs, level=level)


@contextlib.asynccontextmanager
async def opened(config: Config) -> AsyncIterator[Any]:
    from .service import CacheService
    svc = await CacheService.open(config)
    try:
        yield svc
    finally:
        await svc.aclose()


# -- schema -------------------------------------------------------------------------

@click.group()
def schema() -> None:
    """Read and select the site's schema."""


@schema.command("dump")
@common
@click.option("-o", "--output", default="-", help="File to write (default stdout).")
def schema_dump(output: str, **kw: Any) -> None:
    """Write the site's schema (schema_read + schema_entity_read) as JSON."""
    from .service import fetch_site_schema, make_upstream
    config = build_config(kw)

    async def run() -> Schema:
        up = make_upstream(config)
        try:
            return await fetch_site_schema(up)
        finally:
            await up.aclose()

    data = json.dumps(asyncio.run(run()).to_json(), indent=1, sort_keys=True)
    if output == "-":
        click.echo(data)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(data)


@schema.command("filter")
@click.option("--rules", "rules_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-i", "--input", "input_file", default="-", help="Schema JSON to filter (default stdin).")
@click.option("-o", "--output", default="-", help="File to write (default stdout).")
def schema_filter(rules_file: str, input_file: str, output: str) -> None:
    """Keep the types and fields that the rules select (e.g. `Shot.*`, `!*.image`)."""
    src = json.load(sys.stdin) if input_file == "-" else json.load(open(input_file, encoding="utf-8"))
    out = Schema.from_json(src).filtered(load_rules(rules_file))
    data = json.dumps(out.to_json(), indent=1, sort_keys=True)
    if output == "-":
        click.echo(data)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(data)
    click.echo(f"kept {len(out.entities)} types, {sum(len(e.fields) for e in out.entities.values())} fields",
               err=True)


# -- scan ---------------------------------------------------------------------------

async def run_scan(config: Config, full: bool, types: list[str] | None, projects: list[int] | None,
                   show_progress: bool = True) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .scan import full_scan, interval_scan
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
            return await interval_scan(svc.upstream, svc.store, progress)


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


# -- serve --------------------------------------------------------------------------

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
    from .server import run_server
    run_server(config, workers=workers)


# -- demo ---------------------------------------------------------------------------

@click.command()
@click.option("--size", default=2000, show_default=True, help="Entities on the demo site.")
@click.option("--port", default=8010, show_default=True, type=int, help="Port of the cache.")
@click.option("--mock-port", default=8020, show_default=True, type=int, help="Port of the mock site.")
@click.option("--data-dir", default=".sgcache/demo", show_default=True)
@click.option("--once", is_flag=True, help="Prime, check one read through the cache, and exit.")
def demo(size: int, port: int, mock_port: int, data_dir: str, once: bool) -> None:
    """Start the mock site with demo data, prime a SQLite cache, and serve it."""
    setup_logging()
    from .demo import run_demo
    sys.exit(run_demo(size=size, port=port, mock_port=mock_port, data_dir=data_dir, once=once))


def register(main: click.Group) -> None:
    for cmd in (schema, scan, serve, demo):
        main.add_command(cmd)
