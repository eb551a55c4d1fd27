"""A full scan into empty tables builds their indexes once loaded; none is left missing.

The scan drops an empty table's secondary indexes while it loads it (building them from
the loaded table costs far less than growing them row by row). Reads of the type wait
for the scan to complete, and an interrupted scan that is discarded instead of resumed
must not leave the tables without them: every later read would walk whole tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from sgcache.mock.builtin_schema import build_schema
from sgcache.store.tables import Store, make_engine
from sgcache.sync.scan import ParallelScan
from sgcache.sync.scan_plan import Segment, TypePlan
from tests.cache.dbs import BACKENDS, new_db_url


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    for url in new_db_url(request.param, tmp_path):
        engine = make_engine(url)
        s = Store(engine, build_schema())
        s.create()
        yield s
        engine.dispose()


def indexes(store: Store, etype: str) -> set[str]:
    insp = inspect(store.engine)
    et = store[etype]
    return {str(ix["name"]) for t in (et.table, *et.assoc.values()) for ix in insp.get_indexes(t.name)}


def plan(store: Store, etype: str) -> TypePlan:
    return TypePlan(etype, [Segment("active", 0, None, 0), Segment("retired", 0, None, 0)], "sig", 1)


def test_an_interrupted_scan_that_is_discarded_builds_the_indexes_it_dropped(store: Store) -> None:
    want = {str(ix.name) for ix in store.indexes("Shot")}
    assert want and indexes(store, "Shot") == want
    with store.engine.begin() as conn:
        store.upsert(conn, "Asset", [{"id": 1, "code": "a"}], active=True)
    first = ParallelScan(None, store, "full")  # type: ignore[arg-type]
    first.plans = {"Shot": plan(store, "Shot"), "Asset": plan(store, "Asset")}
    first._save_run(None)
    for p in first.plans.values():
        first._save_plan(p)
    assert first.plans["Shot"].deferred and indexes(store, "Shot") == set()
    # a table that holds rows keeps its indexes (it may be served meanwhile)
    assert not first.plans["Asset"].deferred and indexes(store, "Asset") == {str(i.name) for i in store.indexes("Asset")}
    # ... killed here. The next scan starts afresh (another project set, or the watcher's rescan):
    saved, old = ParallelScan(None, store, "full")._load_saved(None, resume=False)  # type: ignore[arg-type]
    assert saved is None and old == {}
    assert indexes(store, "Shot") == want
