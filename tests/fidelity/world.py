"""A world for differential fidelity tests: a mock site, a cache of it, and raw api3 calls.

Requests go over the wire as raw api3 JSON (httpx), so the comparison sees exactly what
the client would parse: the whole `results` (entities *and* paging info) or the Fault.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx

from sgcache.mock.filters import RELATIONS
from sgcache.schema import Schema

from ..e2e.harness import Cache, Site, start_cache, start_site

#: Data types whose values can be read back (and so sampled into value pools).
UNREADABLE = {"pivot_column", "summary", "calculated", "query", "password", "image"}


@dataclass
class World:
    """A site, a cache of it on one backend, the schema, and values seen on the site."""

    site: Site
    cache: Cache
    schema: Schema
    #: entity type -> field -> distinct non-null values seen on the site (wire form)
    pools: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    #: entity type -> ids seen (active and retired)
    ids: dict[str, list[int]] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    passthrough_reasons: Counter[str] = field(default_factory=Counter)
    explain_on: bool = bool(os.environ.get("SGCACHE_FIDELITY_EXPLAIN"))
    _reader: Any = None

    def explain(self, params: Any, method: str = "read") -> None:
        """Count why the cache would pass this read through (diagnostics for the report)."""
        if not self.explain_on:
            return
        from sqlalchemy import create_engine

        from sgcache.read.engine import Passthrough, ReadEngine
        from sgcache.store.tables import Store
        if self._reader is None:
            engine = create_engine(self.cache.env["SGCACHE_DB_URL"])
            schema = Store.recorded_schema(engine)
            self._reader = ReadEngine(Store(engine, schema))
        try:
            with self._reader.store.engine.connect() as conn:
                if method == "summarize":
                    from sgcache.read.summarize import Summarizer
                    Summarizer(self._reader).summarize(conn, params)
                else:
                    self._reader.read(conn, params)
        except Passthrough as p:
            self.passthrough_reasons[re.sub(r"\d+|'[^']*'", "#", p.reason)[:90]] += 1
        except Exception as e:  # noqa: BLE001 - diagnostics only
            self.passthrough_reasons[f"error {type(e).__name__}: {e}"[:90]] += 1

    def auth(self) -> dict[str, str]:
        return {"script_name": self.site.script_name, "script_key": self.site.script_key}

    def call(self, url: str, method: str, params: Any) -> Any:
        """POST one api3 call; the parsed body (results wrapper or Fault body)."""
        body = {"method_name": method, "params": [self.auth(), params]}
        r = self.client.post(url + "/api3/json", content=json.dumps(body, ensure_ascii=False).encode(),
                             headers={"content-type": "application/json; charset=utf-8"})
        assert r.status_code == 200, (r.status_code, r.text[:500])
        data = r.json()
        if isinstance(data, dict) and data.get("exception"):  # only what the client sees of a Fault
            return {"fault": data.get("message"), "error_code": data.get("error_code")}
        return data

    def both(self, method: str, params: Any) -> tuple[Any, Any]:
        return self.call(self.site.url, method, params), self.call(self.cache.url, method, params)

    def upstream_reads(self, method: str = "read") -> int:
        stats = self.client.get(self.site.admin_url + "/stats").json()
        return int(stats.get("requests", {}).get(method, 0))


def load_pools(world: World, types: list[str] | None = None) -> None:
    """Read every record of each type from the site to sample realistic filter values."""
    schema = world.schema
    for etype in types or schema.types():
        fields = [f for f, fs in schema[etype].fields.items() if fs.data_type not in UNREADABLE]
        pool: dict[str, list[Any]] = {f: [] for f in fields}
        ids: list[int] = []
        for only in ("active", "retired"):
            res = world.call(world.site.url, "read", {
                "type": etype, "return_fields": fields, "filters": {"logical_operator": "and", "conditions": []},
                "return_only": only, "paging": {"entities_per_page": 5000, "current_page": 1}})
            for ent in res.get("results", {}).get("entities", []):
                ids.append(ent["id"])
                for f in fields:
                    v = ent.get(f)
                    if v is None or v == []:
                        continue
                    items = v if isinstance(v, list) and schema[etype].fields[f].data_type != "serializable" else [v]
                    for item in items:
                        if item not in pool[f]:
                            pool[f].append(item)
        world.pools[etype] = pool
        world.ids[etype] = ids


def start_world(db_url: str, tmp: Path, *site_args: str, demo: int = 400,
                seed_data: Any = None) -> Iterator[World]:
    """Start a site (optionally seeding it through the API), scan it, serve the cache."""
    from sgcache.mock.builtin_schema import build_schema
    site = start_site(*site_args, demo=demo)
    cache = None
    try:
        if "--schema" in site_args:
            schema = Schema.from_site(json.loads(Path(site_args[site_args.index("--schema") + 1]).read_text())
                                      ["schema_read"])
        else:
            schema = build_schema()
        world = World(site, None, schema)  # type: ignore[arg-type]
        if seed_data is not None:
            seed_data(world)
        # credentials verified once and trusted for the whole run: every upstream read counted
        # by the tests is then a passed-through read
        cache = start_cache(site, db_url, tmp, "--no-sync", SGCACHE_AUTH_TTL="86400")
        world.cache = cache
        load_pools(world)
        world.call(cache.url, "read", {"type": world.schema.types()[0], "return_fields": ["id"],
                                       "paging": {"entities_per_page": 1, "current_page": 1}})
        yield world
    finally:
        if cache is not None:
            cache.stop()
        site.stop()


def seed_generic(world: World, types: list[str], per_type: int = 8, seed: int = 3) -> None:
    """Create a few linked entities of each type through the site's API (for schemas with no data).

    Fields the site refuses are dropped one at a time, so any schema can be seeded.
    """
    rng = random.Random(seed)
    schema = world.schema
    made: dict[str, list[int]] = {}
    words = ["alpha", "Beta", "GAMMA", "Straße", "café", "İstanbul", "naïve", "x_y%z", "", "sh010"]
    for etype in types:
        if etype not in schema:
            continue
        made[etype] = []
        for i in range(per_type):
            fields: list[dict[str, Any]] = []
            for fname, fs in schema[etype].fields.items():
                if fname in ("id", "created_at", "updated_at", "created_by", "updated_by") or rng.random() < 0.2:
                    continue
                v = _random_value(rng, fs, made, words, i)
                if v is not _SKIP:
                    fields.append({"field_name": fname, "value": v})
            while True:
                res = world.call(world.site.url, "create", {"type": etype, "fields": fields, "return_fields": ["id"]})
                if "fault" not in res:
                    made[etype].append(res["results"]["id"])
                    break
                msg = str(res["fault"])
                bad = [f for f in fields if f"'{f['field_name']}'" in msg or f["field_name"] in msg]
                if not fields:
                    break
                fields.remove(bad[0] if bad else rng.choice(fields))
        for eid in made[etype][: max(1, per_type // 5)]:  # retire a few
            if rng.random() < 0.6:
                world.call(world.site.url, "delete", {"type": etype, "id": eid})


class _Skip:
    pass


_SKIP = _Skip()


def _random_value(rng: random.Random, fs: Any, made: dict[str, list[int]], words: list[str], i: int) -> Any:
    dt = fs.data_type
    if rng.random() < 0.15 and dt not in ("checkbox", "multi_entity", "tag_list", "addressing"):
        return None
    if dt == "text":
        return rng.choice(words) + (str(i) if rng.random() < 0.5 else "")
    if dt in ("number", "duration", "percent", "timecode"):
        return rng.randint(-5, 120)
    if dt in ("float", "currency"):
        return rng.choice([0.5, 1.25, 24.0, -3.75, 100.0])
    if dt == "checkbox":
        return rng.random() < 0.5
    if dt == "date":
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if dt == "date_time":
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:15:00Z"
    if dt in ("list", "status_list"):
        return rng.choice(fs.valid_values) if getattr(fs, "valid_values", None) else _SKIP
    if dt == "color":
        return rng.choice(["255,0,0", "pipeline_step", "0,128,255"])
    if dt == "entity":
        cands = [(t, x) for t in fs.valid_types for x in made.get(t, [])]
        if not cands or rng.random() < 0.2:
            return _SKIP
        t, x = rng.choice(cands)
        return {"type": t, "id": x}
    if dt in ("multi_entity", "addressing"):
        cands = [(t, x) for t in fs.valid_types for x in made.get(t, [])]
        return [{"type": t, "id": x} for t, x in rng.sample(cands, min(len(cands), rng.randint(0, 3)))]
    if dt == "tag_list":
        return rng.sample(["hero", "VFX", "réshoot", "wip"], rng.randint(0, 2))
    return _SKIP


__all__ = ["World", "start_world", "load_pools", "seed_generic", "RELATIONS"]
