"""Freshness (issue 15): an edit on the site is served once the watcher has polled, merged
event batches keep the version rule, and the poll pacer keeps the watcher's requests to
the site within its budget."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest
import shotgun_api3

from sgcache.config import Config
from sgcache.mock.builtin_schema import build_schema
from sgcache.read.engine import ReadEngine
from sgcache.store.tables import Store, make_engine
from sgcache.sync.events import EventWatcher, _Batch
from sgcache.sync.loop import PollPacer
from sgcache.sync.refresh import Refresher
from tests.cache.dbs import new_db_url
from tests.support.procs import MockProcess

from .support import CacheEnv


def test_an_edit_on_the_site_is_served_by_the_cache_after_ctrl_poll(cache: CacheEnv, mock: MockProcess) -> None:
    url = cache.serve()
    cache.ctrl("poll")
    site = mock.sg()
    shot = site.find_one("Shot", [], ["id", "description"], order=[{"field_name": "id", "direction": "asc"}])
    client = shotgun_api3.Shotgun(url, script_name=mock.script_name, api_key=mock.script_key)
    assert client.find_one("Shot", [["id", "is", shot["id"]]], ["description"])["description"] == shot["description"]
    site.update("Shot", shot["id"], {"description": "edited on the site"})
    cache.ctrl("poll")  # resolves once the watcher has caught up with the log
    mock.admin("POST", "/stats/reset")
    got = client.find_one("Shot", [["id", "is", shot["id"]]], ["description"])
    assert got["description"] == "edited on the site"
    assert mock.admin("GET", "/stats")["requests"].get("read", 0) == 0  # answered by the cache


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    for url in new_db_url(backend, tmp_path):
        engine = make_engine(url)
        s = Store(engine, build_schema())
        s.create()
        yield s
        engine.dispose()


def test_merged_batches_keep_each_fetch_version(store: Store) -> None:
    """Two pages written in one transaction: a row fetched only for the first keeps the
    first fetch's version, so a newer write-through of it (between the two fetches) stays;
    a row fetched for both is written once, from the later fetch."""
    with store.engine.begin() as conn:
        store.upsert(conn, "Asset", [{"id": 1, "code": "write-through"}], active=True, version=150)
        store.upsert(conn, "Asset", [{"id": 2, "code": "old"}], active=True, version=50)
    watcher = EventWatcher(store, None, Refresher(store, None), Config())  # type: ignore[arg-type]
    first = _Batch([{"id": 10, "event_type": "Shotgun_Asset_Change"}],
                   {"Asset": {1: ({"id": 1, "code": "fetch 1"}, True), 2: ({"id": 2, "code": "fetch 1"}, True)}},
                   100, {}, 10, {})
    second = _Batch([{"id": 11, "event_type": "Shotgun_Asset_Change"}],
                    {"Asset": {2: ({"id": 2, "code": "fetch 2"}, True)}}, 200, {}, 11, {})
    asyncio.run(watcher._write([first, second]))
    reader = ReadEngine(store)
    with store.engine.connect() as conn:
        got = reader.read(conn, {"type": "Asset", "filters": [], "return_fields": ["code"],
                                 "sorts": [{"field_name": "id", "direction": "asc"}]})
        assert [e["code"] for e in got["entities"]] == ["write-through", "fetch 2"]
        assert store.get_state(conn, "last_event_id") == 11
    assert watcher.last_id == 11


def simulate(pacer: PollPacer, seconds: float, cost_of_poll: list[int]) -> tuple[int, list[float]]:
    """Run the pacer on a simulated clock for `seconds`; returns (requests sent, the waits)."""
    now, sent, waits, k = 0.0, 0, [], 0
    while now < seconds:
        cost = cost_of_poll[k % len(cost_of_poll)]
        k += 1
        sent += cost
        now += 0.02  # the pass itself
        wait = pacer.wait(cost, 0.02, now)
        waits.append(wait)
        now += wait
    return sent, waits


def test_quiet_site_is_polled_every_poll_interval() -> None:
    sent, waits = simulate(PollPacer(2.0, 0.5), 60, [1])
    assert max(waits) <= 0.5
    assert sent <= 2.0 * 60 + 1


@pytest.mark.parametrize("costs", [[1, 2], [2], [1, 1, 4], [3, 1, 1, 1, 1, 1, 1, 1]])
def test_edits_stretch_polls_to_the_budget_but_not_past_max_cycle(costs: list[int]) -> None:
    sent, waits = simulate(PollPacer(2.0, 0.5), 600, costs)
    assert sent <= 2.0 * 600 + max(costs)  # the budget, plus the pass that ends past it
    assert max(waits) <= PollPacer.MAX_CYCLE


def test_no_budget_polls_at_the_fixed_interval() -> None:
    _sent, waits = simulate(PollPacer(0, 2.0), 60, [5])
    assert set(waits) == {2.0}
