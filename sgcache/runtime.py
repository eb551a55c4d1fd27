"""The running cache's parts, opened from a Config: the store, its read engine, the site client.

Every command and server opens one `CacheService` and passes it explicitly (no global
state). Schema changes swap `store` and `reader` in place, so holders read them at use.
Sits above `read` and `store`, below `sync` and `serve`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from .config import Config
from .read.engine import ReadEngine, reader_for
from .schema import Schema, load_rules
from .store.field_types import LAYOUT_VERSION
from .store.tables import Store, make_engine
from .upstream import Upstream, fetch_site_schema, make_upstream

#: State key recording the storage layout a database was created with.
LAYOUT_KEY = "layout_version"

log = logging.getLogger("sgcache")



def choose_schema(config: Config, site: Schema | None) -> Schema:
    """The cached subset: the config's schema file, else the site's, then the rules."""
    if config.schema:
        schema = Schema.load(config.schema)
    elif site is not None:
        schema = site
    else:
        raise RuntimeError("no schema: set SGCACHE_SCHEMA or let sgcache read the site's")
    if config.rules:
        schema = schema.filtered(load_rules(config.rules))
    return schema


class CacheService:
    """Everything a running cache needs, built once from the Config."""

    def __init__(self, config: Config, store: Store, upstream: Upstream) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.reader: ReadEngine = reader_for(store)  # knows fields still being backfilled

    @classmethod
    async def open(cls, config: Config, *, transport: httpx.AsyncBaseTransport | None = None,
                   create: bool = True) -> "CacheService":
        """Open the store with its recorded schema, or set it up from the site."""
        if config.database_url.startswith("sqlite:///"):
            Path(config.database_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(config.database_url)
        upstream = make_upstream(config, transport)
        schema = Store.recorded_schema(engine)
        if schema is None:
            if not create:
                raise RuntimeError("the database holds no cache yet; run `sgcache scan --full` first")
            site = None if config.schema else await fetch_site_schema(upstream)
            schema = choose_schema(config, site)
            store = Store(engine, schema)
            store.create()
            with engine.begin() as conn:
                store.set_state(conn, LAYOUT_KEY, LAYOUT_VERSION)
            log.info("created cache for %d entity types", len(schema.entities))
        else:
            store = Store(engine, schema)
            with engine.connect() as conn:
                layout = store.get_state(conn, LAYOUT_KEY)
            if layout != LAYOUT_VERSION:
                engine.dispose()
                await upstream.aclose()
                raise RuntimeError(
                    f"this cache database has storage layout {layout}, this sgcache needs "
                    f"{LAYOUT_VERSION}: drop the database (or delete the SQLite file) and run "
                    "`sgcache scan --full` to rebuild it")
        return cls(config, store, upstream)

    async def aclose(self) -> None:
        await self.upstream.aclose()
        self.store.engine.dispose()

    def status(self) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            return {
                "types": len(self.store.entities),
                "last_full_scan": self.store.get_state(conn, "last_full_scan"),
                "last_interval_scan": self.store.get_state(conn, "last_interval_scan"),
                "last_event_id": self.store.get_state(conn, "last_event_id"),
            }
