"""Nothing is lost: out-of-order event commits, ids that never appear, SIGKILLed watchers."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any, Iterator

import pytest

from tests.support.procs import MockProcess

from .support import CacheEnv, CacheView, compare_all

DELAY = 1.0


@pytest.fixture
def faulty(mock: MockProcess) -> Iterator[MockProcess]:
    mock.set_faults(event_delay=DELAY, event_delay_rate=0.3, event_gap_rate=0.05, seed=11)
    try:
        yield mock
    finally:
        mock.clear_faults()


class Writer:
    """Random mixed writes on the site: creates, scalar and link updates, multi-entity
    add/remove, retirements and revivals. Every write changes something: a no-op update
    moves `updated_at` on the site without any event, which only a scan can see."""

    def __init__(self, sg: Any, seed: int) -> None:
        self.sg = sg
        self.rng = random.Random(seed)
        self.shots = [s["id"] for s in sg.find("Shot", [], ["id"])]
        self.assets = [a["id"] for a in sg.find("Asset", [], ["id"])]
        self.tasks = [t["id"] for t in sg.find("Task", [], ["id"])][:40]
        self.retired: list[int] = []
        self.n = 0

    def one(self) -> None:
        r, sg, rng = self.rng.random(), self.sg, self.rng
        self.n += 1
        shot = {"type": "Shot", "id": rng.choice(self.shots)}
        if r < 0.15:
            t = sg.create("Task", {"content": f"soak {self.n}", "entity": shot,
                                   "project": {"type": "Project", "id": 1}})
            self.tasks.append(t["id"])
        elif r < 0.45:
            sg.update("Task", rng.choice(self.tasks), {"content": f"c{self.n}"})
        elif r < 0.6:
            tid = rng.choice(self.tasks)
            cur = (sg.find_one("Task", [["id", "is", tid]], ["entity"]) or {}).get("entity") or {}
            others = [i for i in self.shots if not (cur.get("type") == "Shot" and cur.get("id") == i)]
            sg.update("Task", tid, {"entity": {"type": "Shot", "id": rng.choice(others)}})
        elif r < 0.75:
            have = {a["id"] for a in sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets"])["assets"]}
            if have and rng.random() < 0.5:
                sg.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": rng.choice(sorted(have))}]},
                          multi_entity_update_modes={"assets": "remove"})
            elif set(self.assets) - have:
                sg.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": rng.choice(
                    sorted(set(self.assets) - have))}]}, multi_entity_update_modes={"assets": "add"})
        elif r < 0.85:
            sg.update("Shot", shot["id"], {"description": f"d{self.n}"})
        elif r < 0.93 and len(self.tasks) > 10:
            t = self.tasks.pop(rng.randrange(len(self.tasks)))
            sg.delete("Task", t)
            self.retired.append(t)
        elif self.retired:
            t = self.retired.pop(rng.randrange(len(self.retired)))
            sg.revive("Task", t)
            self.tasks.append(t)


def test_out_of_order_commits_lose_nothing(faulty: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    cache.start("events")
    cache.ctrl("poll")
    w = Writer(faulty.sg(), seed=5)
    for _ in range(50):
        w.one()
    cache.ctrl("poll")  # some ids are still invisible here: they go to the backlog
    time.sleep(DELAY + 0.3)
    status = cache.ctrl("poll")
    assert status["stats"]["gaps_filled"] > 0, status
    assert compare_all(faulty, view) == []


SOAK_WRITES = int(os.environ.get("SGCACHE_SOAK_WRITES", "200"))
SOAK_KILLS = int(os.environ.get("SGCACHE_SOAK_KILLS", "3"))


def test_soak_sigkill_watcher(faulty: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    """Writes while `sgcache events` is SIGKILLed and restarted; then 0 differences."""
    rng = random.Random(17)
    w = Writer(faulty.sg(), seed=9)
    proc = cache.start("events")
    kill_at = sorted(rng.sample(range(1, SOAK_WRITES), SOAK_KILLS))
    kills = 0
    for i in range(SOAK_WRITES):
        w.one()
        if kills < len(kill_at) and i == kill_at[kills]:
            time.sleep(rng.random() * 0.3)  # land anywhere: mid-batch, mid-transaction, idle
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = cache.start("events")
    assert kills == SOAK_KILLS
    time.sleep(DELAY + 0.3)
    cache.ctrl("poll")
    status = cache.ctrl("poll")
    diffs = compare_all(faulty, view, limit=0)
    assert diffs == [], (len(diffs), sorted({d.split()[0] for d in diffs}), diffs[:5], status)
