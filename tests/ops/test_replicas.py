"""API servers reading from a PostgreSQL streaming standby (issue 14, items 4 and 5).

A real primary and a standby made with `pg_basebackup -R` (private ports, sockets and
data under a temp dir, 127.0.0.1 only), one sync leader on the primary, and two
`sgcache serve --no-sync` API servers (one host: they share a data dir) reading from the
standby, all against the mock site and driven with the real `shotgun_api3` client.
Skips when PostgreSQL's binaries are absent; fails instead when SGCACHE_REQUIRE_PG=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import sqlalchemy as sa

from sgcache.mock.builtin_schema import build_schema

from ..cache.dbs import new_db_url
from ..e2e.harness import Cache, Site, start_cache, start_site
from ..support.pg_pair import PgPair, pg_bin

OTHER = ("other_tool", "other-key-1234")  # a second script: a caller who did not write
#: Built-in types without a project: the mock shows every role all their rows.
OPEN_TYPES = sorted(t for t, e in build_schema().entities.items() if "project" not in e.fields and t != "Project")
#: Artists see their projects' rows (reads checked against the site's own for them); everyone
#: else sees everything.
PERMS = json.dumps({"Artist": {"policy": "assigned_projects", "open_types": OPEN_TYPES}, "*": "full"})
#: The API servers' SGCACHE_REPLICA_MAX_LAG: long enough for the read-your-writes test's
#: reads (two 1 s waits) to run while the paused standby is still in use, on a loaded machine.
MAX_LAG = 10


def _require_pg_binaries() -> None:
    if pg_bin() is None:
        if os.environ.get("SGCACHE_REQUIRE_PG"):
            pytest.fail("SGCACHE_REQUIRE_PG is set but PostgreSQL's initdb/pg_basebackup are not installed")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) not installed")


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s")


def replicas(cache: Cache) -> dict[str, Any]:
    return httpx.get(cache.url + "/status.json", timeout=10).json()["replicas"]


def standby_in_use(cache: Cache) -> bool:
    return bool(replicas(cache)["replicas"][0]["in_use"])


def passthrough(cache: Cache) -> int:
    return int(httpx.get(cache.url + "/status.json", timeout=10).json()["requests"]["passthrough"])


def metrics(cache: Cache) -> str:
    return httpx.get(cache.url + "/metrics", timeout=10).text


def _gauge(text: str, name: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families
    return next((s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                 if s.name == name), None)


def left_out(cache: Cache) -> dict[str, Any] | None:
    r: dict[str, Any] = replicas(cache)["replicas"][0]
    return None if r["in_use"] else r


class World:
    def __init__(self, site: Site, pg: PgPair, leader: Cache, api: list[Cache]) -> None:
        self.site, self.pg, self.leader, self.api = site, pg, leader, api

    def writer(self, cache: Cache) -> Any:
        return cache.sg(self.site)

    def other(self, cache: Cache | None = None) -> Any:
        return self.site.sg(cache.url if cache else None, script_name=OTHER[0], api_key=OTHER[1])

    def description(self, sg: Any, shot_id: int) -> Any:
        return sg.find_one("Shot", [["id", "is", shot_id]], ["description"])["description"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    _require_pg_binaries()
    pg = PgPair()
    site = start_site("--api-user", f"{OTHER[0]}:{OTHER[1]}", demo=200)
    caches: list[Cache] = []
    try:
        pg.start()
        leader = start_cache(site, pg.primary_url, tmp_path_factory.mktemp("leader"), SGCACHE_POLL_INTERVAL="0.5")
        caches.append(leader)
        api_dir = tmp_path_factory.mktemp("api")  # two servers on one host: one data dir
        for _ in range(2):
            caches.append(start_cache(site, pg.primary_url, api_dir, "--no-sync", scan=False,
                                      SGCACHE_DB_READ_URLS=pg.standby_url, SGCACHE_REPLICA_MAX_LAG=str(MAX_LAG),
                                      SGCACHE_PERMISSIONS=PERMS))
        w = World(site, pg, leader, caches[1:])
        for c in w.api:
            wait_for(lambda c=c: standby_in_use(c), what="the standby in use")
        yield w
    finally:
        for c in caches:
            c.stop()
        site.stop()
        pg.stop()


READS: list[tuple[str, list[Any], list[str]]] = [
    ("Shot", [["sg_status_list", "is", "ip"]], ["code", "sg_status_list", "sg_sequence", "description"]),
    ("Asset", [], ["code", "sg_asset_type"]),
    ("Task", [["content", "contains", "a"]], ["content", "entity", "task_assignees"]),
]


@pytest.mark.postgres
def test_reads_are_served_from_the_standby_as_the_site_answers(world: World) -> None:
    shot = world.site.sg().find_one("Shot", [], ["code"], order=[{"field_name": "id", "direction": "asc"}])
    for c in world.api:
        before = replicas(c)["reads"]["replica_reads"]
        for etype, filters, fields in READS:
            assert c.sg(world.site).find(etype, filters, fields) == world.site.sg().find(etype, filters, fields)
        assert world.writer(c).find_one("Shot", [["id", "is", shot["id"]]], ["code"]) == \
            world.site.sg().find_one("Shot", [["id", "is", shot["id"]]], ["code"])
        assert c.sg(world.site).summarize("Shot", [], [{"field": "id", "type": "count"}]) == \
            world.site.sg().summarize("Shot", [], [{"field": "id", "type": "count"}])
        assert replicas(c)["reads"]["replica_reads"] >= before + len(READS) + 2


@pytest.mark.postgres
def test_the_status_page_shows_the_standby_and_its_lag(world: World, tmp_path: Path) -> None:
    from .test_status_page import _require_browser, dump_dom
    _require_browser()
    dom = dump_dom(world.api[0].url + "/status", tmp_path / "profile")
    section = dom[dom.index('id="replicas-section"'):]
    section = section[:section.index("</section>")]
    assert "hidden" not in section[:section.index(">")]
    assert f"127.0.0.1:{world.pg.standby_port}/sgcache" in section and "in use" in section, section
    assert "events behind" in section


@pytest.mark.postgres
def test_a_caller_reads_its_own_writes_through_the_standby(world: World) -> None:
    a, b = world.api
    shot_id = world.site.sg().find_one("Shot", [], ["id"])["id"]
    old = world.description(world.site.sg(), shot_id)
    new = "ryw " + uuid.uuid4().hex[:8]
    world.pg.on_standby("SELECT pg_wal_replay_pause()")  # the standby stops replaying, still in use
    try:
        world.writer(a).update("Shot", shot_id, {"description": new})
        # Another caller's reads come from the standby (in use: lagging less than MAX_LAG) ...
        assert world.description(world.other(a), shot_id) == old
        assert world.description(world.other(b), shot_id) == old
        # ... the writer's see the write, on this server and the other one of the host.
        assert world.description(world.writer(a), shot_id) == new
        assert world.description(world.writer(b), shot_id) == new
        assert world.description(world.site.sg(), shot_id) == new
        assert all(standby_in_use(c) for c in world.api)
    finally:
        world.pg.on_standby("SELECT pg_wal_replay_resume()")
    for c in world.api:  # replayed: everyone reads it from the standby
        wait_for(lambda c=c: world.description(world.other(c), shot_id) == new, what="the standby replays")


def _artist(sg: Any) -> tuple[str, list[int]]:
    """An active Artist with fewer than all projects, and their projects that hold Shots."""
    n = len(sg.find("Project", []))
    for u in sg.find("HumanUser", [["permission_rule_set.PermissionRuleSet.code", "is", "Artist"],
                                   ["sg_status_list", "is", "act"]], ["login", "projects"]):
        mine = [p["id"] for p in u["projects"]]
        if 0 < len(mine) < n and sg.find_one("Shot", [["project.Project.id", "in", mine]], ["id"]):
            return u["login"], mine
    raise AssertionError("the demo site has no Artist assigned to some projects with Shots")


@pytest.mark.postgres
def test_a_restricted_caller_reads_through_the_standby_and_sees_its_own_writes(world: World) -> None:
    a, b = world.api
    login, mine = _artist(world.site.sg())

    def as_artist(cache: Cache | None) -> Any:
        return world.site.sg(cache.url if cache else None, sudo_as_login=login)
    fields = ["code", "description", "project", "sg_sequence"]
    shot_id = world.site.sg().find_one("Shot", [["project.Project.id", "in", mine]], ["id"])["id"]
    hidden = world.site.sg().find_one("Shot", [["project.Project.id", "not_in", mine]], ["id"])["id"]
    # What the site shows this Artist, answered on the standby (not passed through).
    for c in world.api:
        before, sent = replicas(c)["reads"]["replica_reads"], passthrough(c)
        assert as_artist(c).find("Shot", [], fields) == as_artist(None).find("Shot", [], fields)
        for i in (shot_id, hidden):
            assert as_artist(c).find_one("Shot", [["id", "is", i]], fields) == \
                as_artist(None).find_one("Shot", [["id", "is", i]], fields)
        assert as_artist(c).find_one("Shot", [["id", "is", hidden]], fields) is None
        assert passthrough(c) == sent
        assert replicas(c)["reads"]["replica_reads"] >= before + 3
    # Its own write, read back through either server while the standby has not replayed it.
    old = world.description(world.site.sg(), shot_id)
    new = "ryw-artist " + uuid.uuid4().hex[:8]
    world.pg.on_standby("SELECT pg_wal_replay_pause()")
    try:
        as_artist(a).update("Shot", shot_id, {"description": new})
        assert world.description(world.other(a), shot_id) == old  # others: the standby
        for c in world.api:
            assert world.description(as_artist(c), shot_id) == new
            got = {s["id"]: s for s in as_artist(c).find("Shot", [["description", "is", new]], fields)}
            assert list(got) == [shot_id] and got[shot_id]["description"] == new
        assert all(standby_in_use(c) for c in world.api)
    finally:
        world.pg.on_standby("SELECT pg_wal_replay_resume()")
    for c in world.api:
        wait_for(lambda c=c: world.description(world.other(c), shot_id) == new, what="the standby replays")


@pytest.mark.postgres
def test_a_lagging_standby_is_left_out_and_comes_back(world: World) -> None:
    a, b = world.api
    shot_id = world.site.sg().find("Shot", [], ["id"])[1]["id"]
    new = "lag " + uuid.uuid4().hex[:8]
    world.pg.on_standby("SELECT pg_wal_replay_pause()")
    try:
        world.site.sg().update("Shot", shot_id, {"description": new})  # on the site: the leader applies it
        for c in world.api:
            state = wait_for(lambda c=c: left_out(c), what="the lagging standby left out")
            assert state["lag_seconds"] is None or state["lag_seconds"] > MAX_LAG
            wait_for(lambda c=c: replicas(c)["replicas"][0]["lag_events"], what="lag in events")
            ready = httpx.get(c.url + "/readyz", timeout=10)
            assert ready.status_code == 200 and "left out" in ready.text, ready.text
            wait_for(lambda c=c: _gauge(metrics(c), "sgcache_replica_in_use") == 0.0,
                     what="the metrics say it is left out")
            # Everyone reads on the primary meanwhile: the site's answer.
            assert world.description(world.other(c), shot_id) == new == world.description(world.site.sg(), shot_id)
            for etype, filters, fields in READS:
                assert world.other(c).find(etype, filters, fields) == world.site.sg().find(etype, filters, fields)
    finally:
        world.pg.on_standby("SELECT pg_wal_replay_resume()")
    for c in (a, b):
        wait_for(lambda c=c: standby_in_use(c), what="the standby back in use")
        wait_for(lambda c=c: _gauge(metrics(c), "sgcache_replica_in_use") == 1.0, what="the metrics say so")
        wait_for(lambda c=c: replicas(c)["replicas"][0]["lag_events"] == 0, what="no events behind")
        before = replicas(c)["reads"]["replica_reads"]
        assert world.description(world.other(c), shot_id) == new
        assert replicas(c)["reads"]["replica_reads"] > before


@pytest.mark.postgres
def test_a_standby_stopped_and_restarted_fails_no_read(world: World) -> None:
    expected = {(etype, i): world.site.sg().find(etype, filters, fields)
                for i, (etype, filters, fields) in enumerate(READS)}
    shot = world.site.sg().find_one("Shot", [], ["code", "description"])
    done = threading.Event()
    outcomes: list[str] = []

    def reader(c: Cache) -> None:
        sg = world.other(c)
        while not done.is_set():
            try:
                for i, (etype, filters, fields) in enumerate(READS):
                    outcomes.append("ok" if sg.find(etype, filters, fields) == expected[(etype, i)] else "mismatch")
                got = sg.find_one("Shot", [["id", "is", shot["id"]]], ["code", "description"])
                outcomes.append("ok" if got == shot else "mismatch")
            except Exception as e:  # a failed read: the test fails on it
                outcomes.append(f"error {type(e).__name__}: {e}")
    passed = [passthrough(c) for c in world.api]
    threads = [threading.Thread(target=reader, args=(c,)) for c in world.api for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        world.pg.stop_standby()
        for c in world.api:
            wait_for(lambda c=c: not standby_in_use(c), what="the stopped standby left out")
        time.sleep(1.0)
        down = len(outcomes)
        world.pg.start_standby()
        for c in world.api:
            wait_for(lambda c=c: standby_in_use(c), what="the restarted standby back in use")
        time.sleep(1.0)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    failed = [o for o in outcomes if o != "ok"]
    assert not failed, failed[:5]
    assert down > 0 and len(outcomes) > down  # reads went on while it was down and after
    # ... answered by the primary meanwhile, not passed through to the site
    assert [passthrough(c) for c in world.api] == passed


@pytest.mark.postgres
def test_a_hung_standby_is_left_out_and_new_reads_go_on(world: World) -> None:
    etype, filters, fields = READS[0]
    expected = world.site.sg().find(etype, filters, fields)
    world.pg.freeze_standby()  # it keeps its connections open and answers nothing
    try:
        for c in world.api:
            state = wait_for(lambda c=c: left_out(c), what="the hung standby left out")
            assert "not answering" in (state["error"] or ""), state
            sg = world.other(c)
            sg.config.timeout_secs = 20  # a read stuck on the hung standby fails the test
            for _ in range(3):  # reads started since are answered by the primary
                assert sg.find(etype, filters, fields) == expected
                assert sg.find_one("Shot", [["id", "is", expected[0]["id"]]], fields) == expected[0]
    finally:
        world.pg.thaw_standby()
    for c in world.api:
        wait_for(lambda c=c: standby_in_use(c), what="the standby back in use")


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from new_db_url("postgresql", tmp_path)


class _Site:
    """The site as a Refresher sees it: one Shot whose description the test sets; a read can
    be held after it has seen the site (a slow fetch)."""

    def __init__(self) -> None:
        self.description = "old"
        self.hold: asyncio.Event | None = None
        self.seen = asyncio.Event()

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("return_only") != "active":
            return {"entities": []}
        rec = {"type": "Shot", "id": 1, "description": self.description}
        self.seen.set()
        if self.hold is not None:
            await self.hold.wait()
        return {"entities": [rec]}


@pytest.mark.postgres
def test_a_host_whose_clock_runs_behind_neither_loses_a_newer_write_nor_wins_with_an_older(
        pg_url: str) -> None:
    """Two hosts write through to one PostgreSQL: `right` with a true clock, `behind` with one
    5 s slow. Row versions come from the primary's clock, so the host clocks do not matter."""
    from sgcache.mock.builtin_schema import build_schema
    from sgcache.store.tables import Store, make_engine
    from sgcache.sync.refresh import Refresher

    engine = make_engine(pg_url)
    right = Store(engine, build_schema())
    behind = Store(engine, build_schema(), clock=lambda: time.time_ns() - 5_000_000_000)
    right.create()

    def stored() -> Any:
        t = right["Shot"].table
        with engine.connect() as c:
            return c.execute(sa.select(t.c.description).where(t.c.id == 1)).scalar()

    async def scenario() -> None:
        site = _Site()
        # 1. `right` reads the old description, slowly; meanwhile the site changes and
        #    `behind` reads and stores the new one. The older fetch lands last: it must lose.
        gate = site.hold = asyncio.Event()
        slow = asyncio.create_task(Refresher(right, site).apply(  # type: ignore[arg-type]
            {"Shot": {1}}, source="write"))
        await site.seen.wait()  # it has read "old" and is held
        site.description, site.hold = "newer", None
        await Refresher(behind, site).apply({"Shot": {1}}, source="write")  # type: ignore[arg-type]
        assert stored() == "newer"
        gate.set()
        await slow
        assert stored() == "newer", "an older fetch overwrote a newer one"
        # 2. `right` stores a description, then the site changes and `behind` fetches: the
        #    newer fetch must win although `behind`'s clock says it started earlier.
        site.description = "older"
        await Refresher(right, site).apply({"Shot": {1}}, source="write")  # type: ignore[arg-type]
        assert stored() == "older"
        site.description = "newest"
        await Refresher(behind, site).apply({"Shot": {1}}, source="write")  # type: ignore[arg-type]
        assert stored() == "newest", "a newer fetch from a host whose clock runs behind was lost"

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()


def test_replica_urls_are_read_from_the_environment_and_never_shown(tmp_path: Path) -> None:
    from sgcache.config import load_config
    from sgcache.store.replicas import Replicas
    cfg = load_config(env={"SGCACHE_DB_URL": "postgresql+psycopg://sg:pw-primary@db-main/sgcache",
                           "SGCACHE_DB_READ_URLS": "postgresql+psycopg://sg:pw-b@db-b:5433/sgcache, "
                                                   "postgresql+psycopg://sg:pw-c@db-c/sgcache",
                           "SGCACHE_REPLICA_MAX_LAG": "2.5"})
    assert len(cfg.db_read_urls) == 2 and cfg.replica_max_lag == 2.5
    shown = repr(cfg) + repr(cfg.redacted())
    assert "pw-b" not in shown and "pw-c" not in shown
    replicas = Replicas(sa.create_engine("sqlite://"), cfg.db_read_urls, data_dir=tmp_path)
    try:
        assert [r["name"] for r in replicas.snapshot()["replicas"]] == ["db-b:5433/sgcache", "db-c:5432/sgcache"]
        assert "pw-" not in repr(replicas.snapshot())
    finally:
        replicas.close()


def test_read_replicas_need_a_postgresql_primary(tmp_path: Path) -> None:
    from sgcache.config import Config
    from sgcache.mock.builtin_schema import build_schema
    from sgcache.runtime import CacheService
    from sgcache.store.tables import Store, make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    store = Store(engine, build_schema())
    store.create()
    cfg = Config(db_url=str(engine.url), db_read_urls=("postgresql+psycopg://sg@db-b/sgcache",))
    try:
        with pytest.raises(RuntimeError, match="must then be PostgreSQL"):
            CacheService(cfg, store, None)  # type: ignore[arg-type]
    finally:
        engine.dispose()
