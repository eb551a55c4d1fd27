"""Event pages merged into one transaction store exactly what applying them one by one does.

When the writer falls behind a burst, the watcher writes the pages queued meanwhile in
one transaction (`EventWatcher._write` with several batches). The final rows (values,
links, active flag, `_version`), the stored events and the log position must be the same
as page by page, including an entity changed on two of the pages, one retired and
revived across them, one the site no longer shows, and a newer write-through that no
page's older fetch may overwrite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sgcache.config import Config
from sgcache.mock.builtin_schema import build_schema
from sgcache.store.tables import CACHED_AT, Store, make_engine
from sgcache.sync.events import EventWatcher, _Batch
from sgcache.sync.refresh import Refresher
from tests.cache.dbs import new_db_url


@pytest.fixture
def stores(backend: str, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    made: list[Store] = []
    gens = [new_db_url(backend, tmp_path / n) for n in ("one", "merged")]
    for gen, name in zip(gens, ("one", "merged")):
        (tmp_path / name).mkdir()
        s = Store(make_engine(next(gen)), build_schema())
        s.create()
        made.append(s)
    yield made[0], made[1]
    for s, gen in zip(made, gens):
        s.engine.dispose()
        for _ in gen:  # drops the PostgreSQL database
            pass


def asset(i: int, code: str, shots: list[int], tags: list[str] | None = None) -> dict[str, Any]:
    return {"type": "Asset", "id": i, "code": code, "sg_status_list": "ip", "tag_list": tags or [],
            "project": {"type": "Project", "id": 1, "name": "P"},
            "shots": [{"type": "Shot", "id": s, "name": f"s{s}"} for s in shots]}


def event(i: int, kind: str, eid: int) -> dict[str, Any]:
    return {"type": "EventLogEntry", "id": i, "event_type": f"Shotgun_Asset_{kind}", "attribute_name": None,
            "entity": {"type": "Asset", "id": eid}, "created_at": "2026-12-02T10:00:00Z",
            "meta": {"entity_type": "Asset", "entity_id": eid, "type": "attribute_change"}}


def pages() -> list[_Batch]:
    return [
        _Batch([event(101, "Change", 1), event(102, "Change", 2), event(103, "Change", 4)],
               {"Asset": {1: (asset(1, "one v1", [1, 2], ["Hero"]), True), 2: (asset(2, "two v1", [3]), True),
                          4: (asset(4, "four, older fetch", [9]), True)}},
               100, {}, 103, {}),
        _Batch([event(104, "Retirement", 1), event(106, "Change", 3)],
               {"Asset": {1: (asset(1, "one retired", [2]), False), 3: (None, False)}},
               200, {}, 106, {105: 1.0}),
        _Batch([event(105, "Change", 2), event(107, "Revival", 1), event(108, "Change", 2)],
               {"Asset": {1: (asset(1, "one revived", [2, 1]), True), 2: (asset(2, "two v2", []), True)}},
               300, {}, 108, {}),
    ]


def snapshot(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with store.engine.connect() as conn:
        for etype in ("Asset", "EventLogEntry"):
            et = store[etype]
            cols = [c for c in et.table.c if c.name != CACHED_AT]
            out[etype] = [tuple(r) for r in conn.execute(select(*cols).order_by(et.table.c.id))]
            for fname, a in et.assoc.items():
                out[f"{etype}.{fname}"] = [tuple(r) for r in conn.execute(select(a).order_by(a.c.parent_id, a.c.idx))]
        out["position"] = (store.get_state(conn, "last_event_id"), store.get_state(conn, "event_backlog"))
    return out


def test_merged_pages_store_what_page_by_page_stores(stores: tuple[Store, Store]) -> None:
    one, merged = stores
    for s in stores:
        with s.engine.begin() as conn:
            s.upsert(conn, "Asset", [asset(3, "three, gone from the site", [5])], active=True, version=50)
            s.upsert(conn, "Asset", [asset(4, "four, written through", [])], active=True, version=150)
    w1 = EventWatcher(one, None, Refresher(one, None), Config())  # type: ignore[arg-type]
    for page in pages():
        asyncio.run(w1._write([page]))
    w2 = EventWatcher(merged, None, Refresher(merged, None), Config())  # type: ignore[arg-type]
    asyncio.run(w2._write(pages()))

    got, want = snapshot(merged), snapshot(one)
    assert got == want
    by_id = {r[0]: r for r in got["Asset"]}
    assert set(by_id) == {1, 2, 4}  # 3 is gone
    assert [e[0] for e in got["EventLogEntry"]] == [101, 102, 103, 104, 105, 106, 107, 108]
    assert got["position"][0] == 108 and w1.last_id == w2.last_id == 108
    with merged.engine.connect() as conn:
        assert merged.get_links(conn, "Asset", "shots", 1) == [{"type": "Shot", "id": 2}, {"type": "Shot", "id": 1}]
        assert merged.get_links(conn, "Asset", "shots", 4) == []  # the older fetch's links are not applied
        row = {r["id"]: r for r in conn.execute(select(merged["Asset"].table)).mappings()}
    assert row[1]["code"] == "one revived" and row[1]["_active"] and row[1]["_version"] == 300
    assert row[2]["code"] == "two v2" and row[2]["_version"] == 300
    assert row[4]["code"] == "four, written through" and row[4]["_version"] == 150
