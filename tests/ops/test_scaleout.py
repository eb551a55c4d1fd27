"""Scale-out: `--workers N` shares one socket; several servers on one PostgreSQL elect one sync leader."""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..cache.dbs import new_db_url
from ..e2e.harness import Cache, Site, cache_env, sgcache, start_cache


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s")


def status(cache: Cache) -> dict[str, Any]:
    return httpx.get(cache.url + "/status.json", timeout=10).json()


def leaders(caches: list[Cache]) -> list[bool]:
    return [status(c)["leader"] for c in caches]


def description(cache: Cache, site: Site, shot_id: int) -> Any:
    return cache.sg(site).find_one("Shot", [["id", "is", shot_id]], ["description"])["description"]


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from new_db_url("postgresql", tmp_path)


@pytest.mark.postgres
def test_two_servers_on_one_postgresql_have_one_leader_and_fail_over(
        site: Site, pg_url: str, tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = start_cache(site, pg_url, tmp_path / "a", SGCACHE_POLL_INTERVAL="0.5")
    b = start_cache(site, pg_url, tmp_path / "b", scan=False, SGCACHE_POLL_INTERVAL="0.5")
    caches = [a, b]
    try:
        wait_for(lambda: sum(leaders(caches)) == 1, what="one leader")
        for _ in range(5):  # and it stays exactly one
            assert sum(leaders(caches)) == 1
            time.sleep(0.3)
        leader, follower = (a, b) if status(a)["leader"] else (b, a)
        metrics = httpx.get(follower.url + "/metrics").text
        assert "sgcache_sync_leader 0.0" in metrics
        # The follower reports the shared lag from the leader's record of the site's log.
        wait_for(lambda: status(follower)["state"]["lag_ids"] is not None, what="follower knows the lag")
        wait_for(lambda: status(follower)["state"]["rows"].get("Shot"), what="follower shows the leader's counts")
        assert httpx.get(follower.url + "/readyz").status_code == 200

        sg = site.sg()
        shot = sg.find_one("Shot", [], ["description"])
        sg.update("Shot", shot["id"], {"description": "seen by both"})
        for c in caches:  # the leader applied the event; both serve it from the one database
            wait_for(lambda c=c: description(c, site, shot["id"]) == "seen by both", what="event applied")

        assert leader.proc is not None
        leader.proc.kill()
        leader.proc.wait(10)
        wait_for(lambda: status(follower)["leader"], timeout=30, what="fail-over")
        sg.update("Shot", shot["id"], {"description": "after fail-over"})
        wait_for(lambda: description(follower, site, shot["id"]) == "after fail-over", what="new leader applies")
        assert status(follower)["state"]["lag_ids"] is not None
    finally:
        for c in caches:
            c.stop()


def test_workers_share_one_port(site: Site, tmp_path: Path) -> None:
    c = start_cache(site, f"sqlite:///{tmp_path / 'cache.sqlite'}", tmp_path, "--workers", "2",
                    SGCACHE_POLL_INTERVAL="0.5")
    try:
        def pid(_: int) -> int:
            with httpx.Client() as client:  # a new connection each time
                return client.get(c.url + "/status.json").json()["pid"]
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        with cf.ThreadPoolExecutor(8) as ex:
            while len(seen) < 2 and time.monotonic() < deadline:
                seen.update(ex.map(pid, range(40)))
        assert len(seen) == 2, seen

        def read_once(_: int) -> int:  # a new client, so a new connection, each time
            return len(c.sg(site).find("Shot", [], ["code"]))
        with cf.ThreadPoolExecutor(4) as ex:
            assert all(ex.map(read_once, range(20)))
        for _ in range(4):  # whichever worker answers, it counts the reads of both
            served = [s.value for fam in text_string_to_metric_families(httpx.get(c.url + "/metrics").text)
                      for s in fam.samples if s.name == "sgcache_requests_total"
                      and s.labels == {"method": "read", "outcome": "served", "reason": ""}]
            assert served == [20.0], served
        wait_for(lambda: any(status(c)["leader"] for _ in range(10)), what="a leader among the workers")
    finally:
        c.stop()
    assert c.proc is not None and c.proc.returncode == 0, "the supervisor stops its workers cleanly"


def test_a_server_follows_the_lag_when_sgcache_events_leads(site: Site, tmp_path: Path) -> None:
    """`sgcache events` (no HTTP, no sampler) holds the lock; the server still knows the lag."""
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    env = cache_env(site, url, tmp_path, SGCACHE_POLL_INTERVAL="0.5")
    assert sgcache(env, "scan", "--full").returncode == 0
    events = subprocess.Popen([sys.executable, "-m", "sgcache.cli", "events"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # let it take the leader lock first
        c = start_cache(site, url, tmp_path, scan=False, SGCACHE_POLL_INTERVAL="0.5")
        try:
            wait_for(lambda: status(c)["state"]["lag_ids"] is not None, what="lag known")
            assert status(c)["leader"] is False
            assert httpx.get(c.url + "/readyz").status_code == 200
        finally:
            c.stop()
    finally:
        events.terminate()
        events.wait(10)
