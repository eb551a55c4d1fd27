"""The /browse type page over ~100,000 Shots: server-side render time as a browser sees it.

Loads the deterministic demo studio's Shots (and the types their default columns link
to: Project, Sequence, people) straight into a SQLite store in the bench dir, starts
`sgcache serve --no-sync` on it (its site an unused loopback port: every page is answered
from the cache, as during an outage), signs in with a session cookie made from the data
dir's key, and times GETs of type pages over loopback, one client, after a warm-up:

- `default`: the Shot page as first opened (default columns, 50 rows, count of all);
- `sorted_deep`: sorted by code, page 1,000 (rows 49,951-50,000);
- `filtered`: Status is `ip`, sorted by code descending;
- `search`: quick search on code.

    .venv/bin/python bench/browse.py [--size 1045000] [--requests 200]

Target: `default` p95 <= 50 ms. Results: bench/results/browse.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_SIZE,
    WORK,
    machine,
    start_cache_server,
    stop,
    summarize,
    table,
    write_result,
)
from sgcache.mock.builtin_schema import build_schema  # noqa: E402
from sgcache.mock.demo import generate  # noqa: E402
from sgcache.runtime import LAYOUT_KEY, SITE_KEY, site_identity  # noqa: E402
from sgcache.schema import Schema  # noqa: E402
from sgcache.serve.browse.session import COOKIE, Sessions, load_secret  # noqa: E402
from sgcache.store.field_types import LAYOUT_VERSION  # noqa: E402
from sgcache.store.tables import Store, make_engine  # noqa: E402
from sgcache.sync.scan import PRIMED  # noqa: E402

KEEP = ("Shot", "Sequence", "Project", "HumanUser", "ApiUser", "PermissionRuleSet", "Group")
PAGES = {
    "default": "/browse/Shot",
    "sorted_deep": "/browse/Shot?sort=code&page=1000",
    "filtered": "/browse/Shot?f=sg_status_list&op=is&v=ip&sort=-code",
    "search": "/browse/Shot?q=0042",
}


def load(db: Path, site: str, size: int) -> int:
    """The kept types of the demo studio into a SQLite store (reused when already loaded)."""
    full = build_schema()
    schema = Schema({t: full.entities[t] for t in KEEP})
    engine = make_engine(f"sqlite:///{db}")
    if db.exists():
        recorded = Store.recorded_schema(engine)
        if recorded is not None:
            store = Store(engine, recorded)
            with engine.connect() as conn:
                if store.get_state(conn, "bench_size") == size:
                    n = store.counts(conn, "Shot").get("active", 0)
                    print(f"reusing {db.name}: {n:,} shots", flush=True)
                    store.engine.dispose()
                    return int(n)
        engine.dispose()
        db.unlink()
        engine = make_engine(f"sqlite:///{db}")
    store = Store(engine, schema)
    store.create()
    t0 = time.perf_counter()
    batch: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    with engine.begin() as conn:
        for etype, rec in generate(size):
            if etype not in store:
                continue
            rec = dict(rec)
            key = (etype, not rec.pop("__retired", False))
            batch[key].append(rec)
            if len(batch[key]) >= 2000:
                store.upsert(conn, key[0], batch.pop(key), active=key[1])
        for key in list(batch):
            store.upsert(conn, key[0], batch.pop(key), active=key[1])
        store.set_states(conn, {LAYOUT_KEY: LAYOUT_VERSION, SITE_KEY: site_identity(site), PRIMED: list(KEEP),
                                "bench_size": size})
        n = store.counts(conn, "Shot").get("active", 0)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    engine.dispose()
    print(f"loaded {n:,} shots in {time.perf_counter() - t0:.0f}s", flush=True)
    return int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="demo size (entities; ~10.45 per shot)")
    ap.add_argument("--requests", type=int, default=200, help="timed requests per page")
    args = ap.parse_args()
    work = WORK / "browse"
    work.mkdir(parents=True, exist_ok=True)
    site = "http://127.0.0.1:9"  # never answered: the pages come from the cache alone
    db = work / f"cache-{args.size}.sqlite"
    shots = load(db, site, args.size)
    env = dict(os.environ, SGCACHE_SHOTGUN_URL=site, SGCACHE_DB_URL=f"sqlite:///{db}", SGCACHE_DATA_DIR=str(work),
               SGCACHE_THUMBNAIL_CACHE_MB="0", SGCACHE_PERMISSIONS='{"*": "full"}', SGCACHE_SCRIPT_NAME="bench",
               SGCACHE_SCRIPT_KEY="unused")
    env.pop("SGCACHE_CONFIG", None)
    url, proc = start_cache_server(env, work / "serve.log", "--no-sync")
    cookie = Sessions(load_secret(work), 3600).issue("admin")
    results: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, cookies={COOKIE: cookie}, timeout=30) as c:
            for name, path in PAGES.items():
                r = c.get(path)
                assert r.status_code == 200 and 'id="rows"' in r.text, (path, r.status_code, r.text[:300])
                for _ in range(20):  # warm-up: plans, templates, page cache
                    c.get(path)
                lat = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    r = c.get(path)
                    lat.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                s = summarize(lat)
                lat.sort()
                s["p95_ms"] = round(lat[int(0.95 * (len(lat) - 1))] * 1000, 3)
                results[name] = {"path": path, **s, "bytes": len(r.content)}
    finally:
        stop(proc)
    rows = [[n, r["path"], r["p50_ms"], r["p95_ms"], r["bytes"]] for n, r in results.items()]
    print(table(rows, ["page", "path", "p50 ms", "p95 ms", "bytes"]))
    out = write_result("browse", {"shots": shots, "size": args.size, "requests": args.requests,
                                  "pages": results, "target": {"default_p95_ms": 50}, "machine": machine()})
    print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
