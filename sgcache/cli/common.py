"""What every verb shares: the connection options, the Config they build, logging, an opened cache."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

import click

from ..config import Config, load_config

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
async def opened(config: Config, *, create: bool = True) -> AsyncIterator[Any]:
    """The cache's runtime for one command, closed afterwards."""
    from ..runtime import CacheService
    svc = await CacheService.open(config, create=create)
    try:
        yield svc
    finally:
        await svc.aclose()
