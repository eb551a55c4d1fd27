"""The running cache's parts, opened from a Config: the store, its read engine, the site client.

Every command and server opens one `CacheService` and passes it explicitly (no global
state). Schema changes swap `store` and `reader` in place, so holders read them at use.
With `SGCACHE_DB_READ_URLS`, `replicas` routes api3 reads to PostgreSQL streaming replicas
(`store/replicas.py`); everything else, writes first, uses the primary (`store.engine`).
Sits above `read` and `store`, below `sync` and `serve`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .config import Config
from .read.engine import ReadEngine, reader_for
from .schema import Schema, load_rules
from .store.field_types import LAYOUT_VERSION
from .store.replicas import Replicas
from .store.tables import Store, make_engine
from .upstream import Upstream, fetch_site_schema, make_upstream

#: State key recording the storage layout a database was created with.
LAYOUT_KEY = "layout_version"
#: State key: the site this database mirrors (`site_identity` of its URL).
SITE_KEY = "site_url"
#: State key: how the schema was chosen ({"source": "file"|"site", "rules": [...]|None}), so
#: that schema changes keep to the choice whatever the config of the process noticing them.
SCHEMA_CHOICE_KEY = "schema_choice"

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


def site_identity(url: str) -> str:
    """The site's URL as recorded and compared: no credentials, query, default port or
    trailing slash, scheme and host lower-cased (credentials must never be stored)."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def schema_choice(config: Config) -> dict[str, Any]:
    """How this config chooses the schema: a file (kept as chosen) or the site (plus rules)."""
    return {"source": "file" if config.schema else "site",
            "rules": load_rules(config.rules) if config.rules else None}


class CacheService:
    """Everything a running cache needs, built once from the Config."""

    def __init__(self, config: Config, store: Store, upstream: Upstream) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.reader: ReadEngine = reader_for(store)  # knows fields still being backfilled
        self.replicas: Replicas | None = None
        if config.db_read_urls:
            if store.dialect != "postgresql":
                raise RuntimeError("SGCACHE_DB_READ_URLS names PostgreSQL streaming replicas of "
                                   "SGCACHE_DB_URL, which must then be PostgreSQL")
            self.replicas = Replicas(store.engine, config.db_read_urls, max_lag=config.replica_max_lag,
                                     data_dir=config.data_dir)

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
                store.set_states(conn, {LAYOUT_KEY: LAYOUT_VERSION, SITE_KEY: site_identity(config.shotgun_url),
                                        SCHEMA_CHOICE_KEY: schema_choice(config)})
            log.info("created cache of %s for %d entity types", site_identity(config.shotgun_url),
                     len(schema.entities))
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
            try:
                store.upgrade_meta()
                cls._check_site(store, config)
                store.upgrade_indexes()  # only in a database of this site
            except BaseException:
                engine.dispose()
                await upstream.aclose()
                raise
        try:
            return cls(config, store, upstream)
        except BaseException:
            engine.dispose()
            await upstream.aclose()
            raise

    @staticmethod
    def _check_site(store: Store, config: Config) -> None:
        """Refuse a database that mirrors another site: its rows would be served as this one's."""
        ours = site_identity(config.shotgun_url)
        with store.engine.begin() as conn:
            recorded = store.get_state(conn, SITE_KEY)
            if recorded is None:  # made before sites were recorded: it is the one it is used with
                store.set_state(conn, SITE_KEY, ours)
                log.info("recorded %s as this cache's site", ours)
                return
        if recorded == ours:
            return
        if config.site_moved_from and site_identity(config.site_moved_from) == recorded:
            with store.engine.begin() as conn:  # the same site at a new address, as the operator says
                store.set_state(conn, SITE_KEY, ours)
            log.warning("this cache's site moved from %s to %s", recorded, ours)
            return
        raise RuntimeError(
            f"this cache database mirrors {recorded}, but SGCACHE_SHOTGUN_URL is {ours}: point "
            f"SGCACHE_DB_URL (or SGCACHE_DATA_DIR) at the cache of {ours}; or, if it is the same site "
            f"at a new address, set SGCACHE_SITE_MOVED_FROM={recorded} once; or, to reuse this database "
            "for another site, drop it (delete the SQLite file) and run `sgcache scan --full`")

    async def aclose(self) -> None:
        await self.upstream.aclose()
        self.store.engine.dispose()
        if self.replicas is not None:
            self.replicas.close()

    def status(self) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            return {
                "types": len(self.store.entities),
                "last_full_scan": self.store.get_state(conn, "last_full_scan"),
                "last_interval_scan": self.store.get_state(conn, "last_interval_scan"),
                "last_event_id": self.store.get_state(conn, "last_event_id"),
            }
