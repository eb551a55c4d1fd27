"""Pieces of the sync on their own: event planning, the version guard, retention checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest

from sgcache.config import Config
from sgcache.mock.builtin_schema import build_schema
from sgcache.read.engine import ReadEngine
from sgcache.store.tables import Store, make_engine
from sgcache.sync.events import EventWatcher, plan_events
from tests.cache.dbs import new_db_url


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    for url in new_db_url(backend, tmp_path):
        engine = make_engine(url)
        s = Store(engine, build_schema())
        s.create()
        yield s
        engine.dispose()


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """For pieces that never touch the database (one SQLite store, not per backend)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('plain') / 'c.sqlite'}")
    s = Store(engine, build_schema())
    s.create()
    yield s
    engine.dispose()


def ev(i: int, event_type: str, **meta: Any) -> dict[str, Any]:
    return {"id": i, "event_type": event_type, "attribute_name": meta.get("attribute_name"),
            "entity": None, "meta": meta}


def test_plan_uses_meta_not_entity_and_skips_noise(plain_store: Store) -> None:
    store = plain_store
    events = [
        ev(1, "Shotgun_Shot_New", type="new_entity", entity_type="Shot", entity_id=5),
        ev(2, "Shotgun_Shot_Change", attribute_name="code", entity_type="Shot", entity_id=5, in_create=True),
        ev(3, "Shotgun_Shot_Change", attribute_name="tasks", entity_type="Shot", entity_id=6,
           added=[{"type": "Task", "id": 1}], removed=[], actual_attribute_changed="Task.entity"),
        ev(4, "Shotgun_Task_Retirement", type="entity_retirement", entity_type="Task", entity_id=9, id=9),
        ev(5, "Shotgun_Task_Revival", entity_type="Task", entity_id=10, id=10),
        ev(6, "Shotgun_Reading_Change", attribute_name="read_by_current_user", entity_type="Note", entity_id=1),
        ev(7, "Shotgun_Note_Change", attribute_name="sg_current_user_flag", entity_type="Note", entity_id=2),
        # not cached, but the same write moved cached fields (updated_at, updated_by)
        ev(8, "Shotgun_Shot_Change", attribute_name="no_such_field", entity_type="Shot", entity_id=7),
        ev(9, "Shotgun_NotCached_Change", attribute_name="x", entity_type="NotCached", entity_id=1),
        ev(10, "Shotgun_Shot_View", entity_type="Shot", entity_id=8),
        ev(11, "Shotgun_DisplayColumn_New", entity_type="DisplayColumn", entity_id=3, human_name="X"),
    ]
    plan = plan_events(events, store)
    assert plan.touched == {"Shot": {5, 6, 7}, "Task": {9, 10}}
    assert plan.revived == {"Task": {10}}
    assert plan.schema_changed
    assert plan.ignored == 5  # 2, 6, 7, 9, 10


def test_older_fetch_never_overwrites_newer(store: Store) -> None:
    rec = {"id": 1, "code": "new", "assets": [{"type": "Asset", "id": 2}]}
    old = {"id": 1, "code": "old", "assets": [{"type": "Asset", "id": 3}]}
    with store.engine.begin() as conn:
        store.upsert(conn, "Asset", [{"id": 2, "code": "a2"}, {"id": 3, "code": "a3"}], active=True)
        store.upsert(conn, "Shot", [rec], active=True, version=200)
        store.upsert(conn, "Shot", [old], active=False, version=100)  # late and stale
    reader = ReadEngine(store)
    with store.engine.connect() as conn:
        got = reader.read(conn, {"type": "Shot", "filters": [], "return_fields": ["code", "assets"]})
        assert [(e["code"], [a["id"] for a in e["assets"]]) for e in got["entities"]] == [("new", [2])]
        assert store.delete_rows(conn, "Shot", [1], version=150) == 0  # a newer fetch saw it
    with store.engine.begin() as conn:
        store.upsert(conn, "Shot", [old], active=True, version=300)  # a later fetch wins
    with store.engine.connect() as conn:
        got = reader.read(conn, {"type": "Shot", "filters": [], "return_fields": ["code", "assets"]})
        assert [(e["code"], [a["id"] for a in e["assets"]]) for e in got["entities"]] == [("old", [3])]


class EdgeSite:
    """Answers only the watcher's "first/last event" reads: a log holding ids lo..hi."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        assert method == "read" and params["type"] == "EventLogEntry"
        i = self.lo if params["sorts"][0]["direction"] == "asc" else self.hi
        return {"entities": [{"type": "EventLogEntry", "id": i, "created_at": "2026-01-01T00:00:00Z"}]}


@pytest.mark.parametrize("lo,hi,last,rescan", [
    (1, 100, 50, False),   # inside the log
    (1, 100, 100, False),  # at its end
    (51, 100, 50, False),  # the next event is the oldest still kept
    (60, 100, 50, True),   # retention dropped 51..59
    (1, 40, 50, True),     # the log ends before our position: truncated or reset
])
def test_retention_and_truncation_trigger_a_rescan(plain_store: Store, lo: int, hi: int, last: int,
                                                    rescan: bool) -> None:
    w = EventWatcher(plain_store, EdgeSite(lo, hi), refresher=None, config=Config())  # type: ignore[arg-type]
    w.last_id = last
    why: list[str] = []

    async def fake_rescan(reason: str) -> None:
        why.append(reason)
    w.rescan = fake_rescan  # type: ignore[method-assign]
    asyncio.run(w.check_retention())
    assert bool(why) is rescan, why


def test_backlog_takes_missing_ids_fills_them_late_and_expires_them(plain_store: Store) -> None:
    w = EventWatcher(plain_store, EdgeSite(1, 1), refresher=None, config=Config(backlog_ttl=300))  # type: ignore[arg-type]
    last, backlog = w._advance([{"id": 3}, {"id": 6}], 1, {}, now=1000.0)
    assert (last, sorted(backlog)) == (6, [2, 4, 5])
    last, backlog = w._advance([{"id": 4}, {"id": 7}], last, backlog, now=1100.0)  # 4 committed late
    assert (last, sorted(backlog)) == (7, [2, 5]) and w.stats["gaps_filled"] == 1
    assert sorted(w._expire(dict(backlog), now=1299.0)) == [2, 5]
    assert w._expire(dict(backlog), now=1301.0) == {} and w.stats["gaps_expired"] == 2


class LogSite:
    """A log whose visible ids are `visible`: answers `id > n` and `id in [...]` reads."""

    def __init__(self, visible: set[int]) -> None:
        self.visible = visible

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        cond = params["filters"]["conditions"][0]
        if cond["relation"] == "greater_than":
            ids = sorted(i for i in self.visible if i > cond["values"][0])
        else:
            ids = sorted(i for i in self.visible if i in set(cond["values"]))
        n = params["paging"]["entities_per_page"]
        return {"entities": [{"type": "EventLogEntry", "id": i, "event_type": "x"} for i in ids[:n]]}


def test_a_late_id_is_found_behind_many_that_never_fill(plain_store: Store) -> None:
    never = {i: 0.0 for i in range(1, 1200)}  # rolled back: they pile up until they expire
    w = EventWatcher(plain_store, LogSite({1500, 1600, 1601}), refresher=None,  # type: ignore[arg-type]
                     config=Config())
    events, full = asyncio.run(w._read_page(1600, {**never, 1500: 0.0}))
    assert [e["id"] for e in events] == [1500, 1601] and not full
