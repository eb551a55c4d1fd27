"""Schema changes without a restart: re-read the site's schema, diff, alter, backfill.

Triggered by `DisplayColumn` events (which do not say which type owns the field, and
deleting a field writes none) and by a periodic check. New fields of cached types get
their columns (or association table), are recorded in `_sgcache_fields` with
`ready = false`, and are backfilled by a scan; until then the read engine passes reads
that need them through. Removed fields are dropped. Every process serving the database
notices the new `schema_generation` and rebuilds its Store and ReadEngine.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, bindparam, delete, or_, select, update
from sqlalchemy.engine import Connection

from ..config import Config
from ..runtime import SCHEMA_CHOICE_KEY, schema_choice
from ..schema import FieldSchema, Schema
from ..store.field_types import MultiEntityField
from ..store.tables import SCHEMA_GENERATION, VERSION, Store
from ..upstream import Upstream, fetch_site_schema

log = logging.getLogger("sgcache.schema_sync")



@dataclass
class SchemaDiff:
    added: dict[str, list[FieldSchema]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    redefined: dict[str, list[FieldSchema]] = field(default_factory=dict)  # same type, new properties

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.redefined)

    def summary(self) -> dict[str, list[str]]:
        return {"added": [f"{t}.{f.name}" for t, fs in self.added.items() for f in fs],
                "removed": [f"{t}.{f}" for t, fs in self.removed.items() for f in fs],
                "redefined": [f"{t}.{f.name}" for t, fs in self.redefined.items() for f in fs]}


def diff_schema(cached: Schema, site: Schema, rules: list[str] | None = None,
                adopt_new: bool = True) -> SchemaDiff:
    """What changed on the site for the types the cache holds (new types are not adopted).

    New fields are adopted when the rules select them (all of them without rules), and
    never when `adopt_new` is false: a schema chosen as a file stays as chosen.
    """
    chosen = site.filtered(rules) if rules else site
    d = SchemaDiff()
    for etype, ent in cached.entities.items():
        if etype not in site:
            continue  # a vanished type is left alone: far more likely a permission problem
        site_fields = site[etype].fields
        for fname, fs in (chosen[etype].fields.items() if etype in chosen else ()):
            old = ent.fields.get(fname)
            if old is None:
                if adopt_new:
                    d.added.setdefault(etype, []).append(fs)
            elif old.data_type != fs.data_type:
                d.removed.setdefault(etype, []).append(fname)
                d.added.setdefault(etype, []).append(fs)
            elif json.dumps(old.to_site(), sort_keys=True) != json.dumps(fs.to_site(), sort_keys=True):
                d.redefined.setdefault(etype, []).append(fs)
        for fname in ent.fields:
            if fname != "id" and fname not in site_fields:
                d.removed.setdefault(etype, []).append(fname)
    return d


class SchemaSync:
    def __init__(self, store: Store, upstream: Upstream, config: Config) -> None:
        self.store = store
        self.upstream = upstream
        self.config = config

    async def check(self) -> Store | None:
        """Diff with the site; apply and backfill. Returns the new Store if anything changed."""
        site = await fetch_site_schema(self.upstream)
        choice = await asyncio.to_thread(self._choice)
        d = diff_schema(self.store.schema, site, choice.get("rules"), adopt_new=choice.get("source") != "file")
        if not d:
            return None
        log.warning("site schema changed: %s", d.summary())
        new_schema = self.store.schema.copy()
        for etype, names in d.removed.items():
            for n in names:
                new_schema[etype].fields.pop(n, None)
        for etype, fss in list(d.added.items()) + list(d.redefined.items()):
            for fs in fss:
                new_schema[etype].fields[fs.name] = fs
        new_store = Store(self.store.engine, new_schema)
        await asyncio.to_thread(self._alter, self.store, new_store, d)
        for etype, fss in d.added.items():
            await self._backfill(new_store, etype, [fs.name for fs in fss])
        await asyncio.to_thread(self._mark_ready, new_store, d)
        self.store = new_store
        return new_store

    def _choice(self) -> dict[str, Any]:
        """How the schema was chosen when the database was made (this process's config may
        differ: e.g. `serve` run without the SGCACHE_SCHEMA that `scan --full` was given)."""
        with self.store.engine.connect() as conn:
            recorded = self.store.get_state(conn, SCHEMA_CHOICE_KEY)
        return recorded if isinstance(recorded, dict) else schema_choice(self.config)

    # -- DDL -----------------------------------------------------------------------------
    def _alter(self, old: Store, new: Store, d: SchemaDiff) -> None:
        engine = new.engine
        prep = engine.dialect.identifier_preparer
        with engine.begin() as conn:
            for etype, names in d.removed.items():
                et = old[etype]
                for n in names:
                    ft = et.fields.get(n)
                    if ft is None:
                        continue
                    if n in et.assoc:
                        et.assoc[n].drop(conn, checkfirst=True)
                        continue
                    for ix in list(et.table.indexes):
                        if any(c.name in ft.column_names for c in ix.columns):
                            ix.drop(conn, checkfirst=True)
                    for col in ft.column_names:
                        conn.exec_driver_sql(f"ALTER TABLE {prep.quote(etype)} DROP COLUMN {prep.quote(col)}")
            for etype, fss in d.added.items():
                et = new[etype]
                for fs in fss:
                    ft = et.fields.get(fs.name)
                    if ft is None:
                        continue  # not cacheable (image, summary ...): recorded only
                    if isinstance(ft, MultiEntityField):
                        et.assoc[fs.name].create(conn, checkfirst=True)
                        for ix in et.assoc[fs.name].indexes:
                            ix.create(conn, checkfirst=True)
                        continue
                    for col in ft.columns():
                        ddl = col.type.compile(dialect=engine.dialect)
                        conn.exec_driver_sql(
                            f"ALTER TABLE {prep.quote(etype)} ADD COLUMN {prep.quote(col.name)} {ddl}")
                    for ix in et.table.indexes:
                        if any(c.name in ft.column_names for c in ix.columns):
                            ix.create(conn, checkfirst=True)
            t = new.fields_table
            for etype, names in d.removed.items():
                conn.execute(delete(t).where(t.c.entity_type == etype, t.c.field_name.in_(names)))
            for etype, fss in list(d.added.items()) + list(d.redefined.items()):
                for fs in fss:
                    ft = new[etype].fields.get(fs.name)
                    conn.execute(delete(t).where(t.c.entity_type == etype, t.c.field_name == fs.name))
                    conn.execute(t.insert().values(
                        entity_type=etype, field_name=fs.name, data_type=fs.data_type, cached=ft is not None,
                        columns=json.dumps(ft.column_names if ft else []),
                        site_def=json.dumps(fs.to_site(), sort_keys=True),
                        ready=not (ft is not None and etype in d.added and fs in d.added[etype])))
            self._bump(new, conn)

    def _bump(self, store: Store, conn: Connection) -> None:
        store.set_state(conn, SCHEMA_GENERATION, int(store.get_state(conn, SCHEMA_GENERATION, 0) or 0) + 1)

    # -- backfill ----------------------------------------------------------------------------
    async def _backfill(self, store: Store, etype: str, names: list[str]) -> None:
        """Fill new fields of existing rows only: entities the cache lacks come by sync."""
        et = store[etype]
        names = [n for n in names if n in et.fields]
        if not names:
            return
        n = 0
        for return_only in ("active", "retired"):
            version = await asyncio.to_thread(store.now_version)
            async for page in self.upstream.read_pages(etype, ["id", *names], return_only=return_only,
                                                       page_size=self.config.page_size):
                await asyncio.to_thread(self._fill, store, etype, names, page, version)
                n += len(page)
        log.info("backfilled %s.%s on %d rows", etype, ",".join(names), n)

    def _fill(self, store: Store, etype: str, names: list[str], page: list[dict[str, Any]], version: int) -> None:
        et = store[etype]
        t = et.table
        rows = [et.row_for({k: v for k, v in r.items() if k in names or k == "id"}) for r in page]
        cols = sorted({c for r in rows for c in r if c != "id"})
        with store.engine.begin() as conn:
            if cols:
                stmt = update(t).where(t.c.id == bindparam("_id"), or_(t.c[VERSION].is_(None), t.c[VERSION] <= version)) \
                    .values({c: bindparam("v_" + c) for c in cols})
                conn.execute(stmt, [{"_id": r["id"], **{"v_" + c: r.get(c) for c in cols}} for r in rows])
            multi = [n for n in names if n in et.assoc]
            if multi:
                ids = {r["id"] for r in page}
                existing = set(conn.execute(select(t.c.id).where(
                    t.c.id.in_(ids), or_(t.c[VERSION].is_(None), t.c[VERSION] <= version))).scalars())
                for f in multi:
                    store.replace_links(conn, etype, f, {r["id"]: r.get(f) or [] for r in page if r["id"] in existing})

    async def resume(self) -> None:
        """Finish backfills a previous leader left half done (fields still not ready)."""
        pending = await asyncio.to_thread(self.store.unready_fields)
        by_type: dict[str, list[str]] = {}
        for etype, fname in pending:
            if etype in self.store and fname in self.store[etype].fields:
                by_type.setdefault(etype, []).append(fname)
        if not by_type:
            return
        for etype, names in by_type.items():
            await self._backfill(self.store, etype, names)
        d = SchemaDiff(added={t: [self.store.schema[t].fields[n] for n in ns] for t, ns in by_type.items()})
        await asyncio.to_thread(self._mark_ready, self.store, d)

    def _mark_ready(self, store: Store, d: SchemaDiff) -> None:
        t = store.fields_table
        with store.engine.begin() as conn:
            for etype, fss in d.added.items():
                conn.execute(update(t).where(t.c.entity_type == etype,
                                             t.c.field_name.in_([f.name for f in fss])).values(ready=True))
            self._bump(store, conn)


def reload_store(engine: Engine) -> Store | None:
    schema = Store.recorded_schema(engine)
    return Store(engine, schema) if schema is not None else None

