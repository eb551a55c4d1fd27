"""A full scan into empty tables builds their indexes once loaded; none is left missing.

The scan drops an empty table's secondary indexes while it loads it (building them from
the loaded table costs far less than growing them row by row). Reads of the type wait
for the scan to complete, and an interrupted scan that is discarded instead of resumed
must not leave the tables without them: every later read would walk whole tables.
The builds of a completed type are spread between page writes: built in one go, a big
type's indexes held the writer, and every fetcher behind it, for seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect

from sgcache.mock.builtin_schema import build_schema
from sgcache.store.tables import Store, make_engine
from sgcache.sync.scan import ParallelScan, full_scan, return_fields_for
from sgcache.sync.scan_plan import Segment, TypePlan, fields_sig, type_key
from tests.cache.dbs import BACKENDS, new_db_url
from tests.sync.test_scan_slots import SlowSite


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


def statements(store: Store) -> list[str]:
    """Every statement the store's engine runs from now on, first line only."""
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _log(conn: Any, cursor: Any, stmt: str, *args: Any) -> None:
        seen.append(" ".join(stmt.split()))
    return seen


def test_a_completed_types_indexes_are_built_between_page_writes_and_all_exist_at_the_end(store: Store) -> None:
    sizes = {"Shot": 1000, "Asset": 900}  # Shot completes while Asset's pages are still coming
    seen = statements(store)
    res = asyncio.run(full_scan(SlowSite(sizes, delay=0), store, list(sizes), concurrency=2))  # type: ignore[arg-type]
    assert res.rows == sizes
    shot_ix = {str(ix.name) for ix in store.indexes("Shot")}
    builds = [k for k, q in enumerate(seen) if q.startswith("CREATE INDEX") and q.split()[2].strip('"') in shot_ix]
    assert len(builds) == len(shot_ix)
    asset = store["Asset"].table.name
    between = [q for q in seen[builds[0]:builds[-1]] if q.startswith("INSERT INTO") and q.split()[2].strip('"') == asset]
    assert between  # Asset pages were written while Shot's indexes were being built
    for etype in sizes:
        assert indexes(store, etype) == {str(ix.name) for ix in store.indexes(etype)}


def test_a_resumed_scan_builds_the_indexes_of_a_type_completed_before_the_kill(store: Store) -> None:
    want = {str(ix.name) for ix in store.indexes("Shot")}
    with store.engine.begin() as conn:
        store.upsert(conn, "Shot", [{"id": 1, "code": "s1"}], active=True)
    first = ParallelScan(None, store, "full")  # type: ignore[arg-type]
    first._save_run(None)
    done = plan(store, "Shot")
    for seg in done.segments:
        seg.done = True
    done.deferred, done.rows = True, 1
    done.fields_sig = fields_sig(return_fields_for(store, "Shot"), None)
    with store.engine.begin() as conn:
        store.drop_indexes(conn, "Shot")
        store.set_states(conn, {type_key("full", "Shot"): done.to_json()})
    # ... killed after the commit that completed Shot, before its indexes were built.
    assert indexes(store, "Shot") == set()
    site = SlowSite({"Shot": 1}, delay=0)
    again = ParallelScan(site, store, "full")  # type: ignore[arg-type]
    asyncio.run(_resume(again))
    assert again.resumed and again.plans["Shot"].done
    assert not [c for c in site.log if c[1] == "read"]  # nothing read again
    assert indexes(store, "Shot") == want


async def _resume(scan: ParallelScan) -> None:
    await scan.prepare(["Shot"], None, resume=True)
    await scan.run()


class LinkedSite(SlowSite):
    """SlowSite whose Shots link to Assets: Shot i to Assets i and i + 1."""

    def _answer(self, method: str, params: Any) -> Any:
        res = super()._answer(method, params)
        if method == "read" and params["type"] == "Shot":
            for e in res["entities"]:
                e["assets"] = [{"type": "Asset", "id": e["id"]}, {"type": "Asset", "id": e["id"] + 1}]
        return res


def test_a_full_scan_of_an_empty_table_drops_lists_left_without_a_row(store: Store) -> None:
    """Lists under ids with no row (left by an older version, or a crash of one) must not
    join the lists a scan of the empty table writes: each row gets the site's list only."""
    with store.engine.begin() as conn:
        store.replace_links(conn, "Shot", "assets", {i: [{"type": "Asset", "id": 99}] for i in (1, 7, 500)})
    res = asyncio.run(full_scan(LinkedSite({"Shot": 30}, delay=0), store, ["Shot"], concurrency=2))  # type: ignore[arg-type]
    assert res.rows == {"Shot": 30}
    with store.engine.connect() as conn:
        for i in (1, 7, 30):
            assert store.get_links(conn, "Shot", "assets", i) == [{"type": "Asset", "id": i}, {"type": "Asset", "id": i + 1}]
        assert store.get_links(conn, "Shot", "assets", 500) == []  # no row: its list is gone


def test_on_postgresql_pages_go_on_committing_while_a_finished_types_index_is_built(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL builds a finished type's indexes on a connection of their own: one index
    of a big type takes seconds there, and every fetcher would wait behind it (each holds
    at most two uncommitted pages). SQLite has one writer, so its pages wait."""
    sizes = {"Shot": 100, "Asset": 600}  # Shot finishes first; Asset's pages keep coming
    slow = str(next(iter(store.indexes("Shot"))).name)
    windows: list[tuple[float, float]] = []
    real_ensure = store.ensure_index

    def ensure_index(conn: Any, ix: Any) -> None:
        if str(ix.name) != slow:
            return real_ensure(conn, ix)
        t0 = time.monotonic()
        time.sleep(0.6)  # a big table's sort
        real_ensure(conn, ix)
        windows.append((t0, time.monotonic()))
    monkeypatch.setattr(store, "ensure_index", ensure_index)
    commits: list[tuple[float, set[str]]] = []
    real_commit = ParallelScan._commit

    def commit(self: ParallelScan, batch: list[Any]) -> None:
        real_commit(self, batch)
        commits.append((time.monotonic(), {p.plan.etype for p in batch}))
    monkeypatch.setattr(ParallelScan, "_commit", commit)

    site = SlowSite(sizes, delay=0.01)
    res = asyncio.run(full_scan(site, store, list(sizes), concurrency=2))  # type: ignore[arg-type]
    assert res.rows == sizes
    assert len(windows) == 1
    start, end = windows[0]
    during = [t for t, types in commits if start < t < end and "Asset" in types]
    if store.dialect == "postgresql":
        assert len(during) >= 5, (len(during), len(commits))
    else:
        assert during == []
    for etype in sizes:
        assert indexes(store, etype) == {str(ix.name) for ix in store.indexes(etype)}
