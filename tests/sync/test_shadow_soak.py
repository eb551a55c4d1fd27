"""Shadow verification against a syncing cache (issue 17): differences are lag, never mismatches.

Random writes on a site whose event commits arrive late and out of order, the serving
cache SIGKILLed and restarted now and then, and a client reading what is being written
through the cache the whole time with `SGCACHE_SHADOW_RATE=1`. The cache lags (that is
what a cache does); shadow verification must see that lag for what it is: no mismatch
may be recorded (`_sgcache_shadow` lives in the database, so it survives the kills).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import shotgun_api3
from sqlalchemy import MetaData, select

from sgcache.store.quarantine import shadow_table
from sgcache.store.tables import make_engine
from tests.support.procs import MockProcess

from tests.support.app_in_process import Cache, by_id

from .conftest import make_cache
from .support import NOEVENTS, CacheEnv
from .test_gaps_and_crashes import DELAY, Writer

SOAK_WRITES = int(os.environ.get("SGCACHE_SOAK_WRITES", "200"))
SOAK_KILLS = int(os.environ.get("SGCACHE_SOAK_KILLS", "3"))


@pytest.fixture
def faulty(mock: MockProcess) -> Iterator[MockProcess]:
    mock.set_faults(event_delay=DELAY, event_delay_rate=0.3, event_gap_rate=0.05, seed=13)
    try:
        yield mock
    finally:
        mock.clear_faults()


@pytest.fixture
def shadowed(faulty: MockProcess, backend: str, tmp_path: Path) -> Iterator[CacheEnv]:
    yield from make_cache(faulty, backend, tmp_path, SGCACHE_POLL_INTERVAL="0.3", SGCACHE_SHADOW_RATE="1",
                          SGCACHE_SHADOW_BUDGET="200")


def reads(sg: Any, w: Writer, rng: random.Random) -> None:
    """What a pipeline reads while others write: the entities being written, several ways."""
    shot = rng.choice(w.shots)
    sg.find_one("Shot", [["id", "is", shot]], ["code", "description", "assets", "updated_at"])
    sg.find("Task", [["entity", "is", {"type": "Shot", "id": shot}]], ["content", "entity"],
            order=[{"field_name": "id", "direction": "asc"}])
    sg.find("Task", [["id", "in", w.tasks[-20:]]], ["content", "entity", "updated_at"])
    sg.find("Shot", [["assets", "is_not", None]], ["assets"], order=[{"field_name": "id", "direction": "asc"}],
            limit=20)
    sg.summarize("Task", [["entity", "type_is", "Shot"]], [{"field": "id", "type": "count"}],
                 grouping=[{"field": "entity", "type": "exact", "direction": "asc"}])


def shadow_state(url: str) -> dict[str, Any]:
    return httpx.get(url + "/status.json", timeout=10).json()["shadow"]


def test_soak_with_every_answer_shadowed_finds_lag_and_no_mismatch(faulty: MockProcess,
                                                                   shadowed: CacheEnv) -> None:
    rng = random.Random(23)
    w = Writer(faulty.sg(), seed=21)
    url = shadowed.serve()
    shadowed.ctrl("poll")
    sg = shotgun_api3.Shotgun(url, script_name=faulty.script_name, api_key=faulty.script_key)
    kill_at = sorted(rng.sample(range(1, SOAK_WRITES), SOAK_KILLS))
    kills = 0
    results = {"match": 0, "lag": 0}
    for i in range(SOAK_WRITES):
        w.one()
        reads(sg, w, rng)
        if kills < len(kill_at) and i == kill_at[kills]:
            st = shadow_state(url)
            results = {k: results[k] + st["results"][k] for k in results}
            shadowed.procs[-1].send_signal(signal.SIGKILL)
            shadowed.procs[-1].wait(10)
            kills += 1
            url = shadowed.serve()
            sg = shotgun_api3.Shotgun(url, script_name=faulty.script_name, api_key=faulty.script_key)
    time.sleep(DELAY + 0.3)
    shadowed.ctrl("poll")
    for _ in range(20):  # the cache caught up: now the same reads agree with the site
        reads(sg, w, rng)
    deadline = time.monotonic() + 60
    while shadow_state(url)["queued"] and time.monotonic() < deadline:  # the last shadow calls finish
        time.sleep(0.1)
    st = shadow_state(url)
    results = {k: results[k] + st["results"][k] for k in results}

    engine = make_engine(shadowed.db_url)
    try:
        with engine.connect() as conn:
            t = shadow_table(MetaData())
            mismatches = conn.execute(select(t.c.id, t.c.entity_type, t.c.diff, t.c.shape)).all()
    finally:
        engine.dispose()
    assert mismatches == [], mismatches[:5]
    assert st["results"]["mismatch"] == 0 and st["quarantined"] == []
    assert results["lag"] > 0, results  # the cache was behind, and that was seen as lag
    assert results["match"] > 0, results  # and, caught up, the same reads agree


def test_a_write_by_a_script_with_events_off_is_lag(mock: MockProcess, cache: CacheEnv) -> None:
    """No event names the change (trap 3): the site's newer `updated_at` says it is lag, and
    so does the cache's own row, once an interval scan has brought it before the shadow call."""
    cache.start("events")
    cache.ctrl("poll")  # an event position, as every syncing cache has
    bot = mock.sg(script_name=NOEVENTS[0], api_key=NOEVENTS[1])
    shot = mock.sg().find("Shot", [], ["id"], order=[{"field_name": "id", "direction": "asc"}])[2]["id"]

    async def go() -> None:
        async with Cache(mock, cache.env) as c:
            await c.call("read", by_id(shot, ["code", "description"]))
            bot.update("Shot", shot, {"description": "written by a script with events off"})
            await c.shadow.drain()
            assert await c.metric("sgcache_shadow_total", result="lag") == 1

            await c.call("read", by_id(shot, ["description"]))
            bot.update("Shot", shot, {"description": "and again"})
            cache.ctrl("scan")  # the interval scan brings it in before the shadow call
            await c.shadow.drain()
            assert await c.metric("sgcache_shadow_total", result="lag") == 2
            assert await c.metric("sgcache_shadow_total", result="mismatch") == 0
            assert c.shadow.quarantine == {}
    asyncio.run(go())
