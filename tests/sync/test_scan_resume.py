"""A full scan killed part way resumes from its last committed pages (issue 14, item 2).

Real `sgcache scan --full` processes against a real mock site, SIGKILLed at random
points (once they have committed a random share of the rows). The resumed scan must
prime exactly what an uninterrupted one primes, and read again only the pages that were
in flight: the mock's admin /stats counts every read it answered.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from sgcache.store.tables import CACHED_AT, VERSION, Store, make_engine
from sgcache.sync.scan import PRIMED, SPARE_FETCHERS
from tests.cache.dbs import BACKENDS, new_db_url
from tests.support.procs import ROOT, MockProcess, running_mock

from .support import CacheEnv, CacheView, compare_all, short_dir

PAGE = 20  # small pages: many commits, many places to be killed at
CONCURRENCY = 4
#: A fetcher holds at most two uncommitted pages: the one in flight and the one queued;
#: a scan runs one fetcher more than its concurrency (the spare waits on a slot).
REREAD_PER_KILL = 2 * (CONCURRENCY + SPARE_FETCHERS)


@pytest.fixture(scope="module")
def site() -> Iterator[MockProcess]:
    # 50 ms a request: slow enough to be killed part way, as a hosted site would be.
    with running_mock("--demo", "1500", "--latency", "0.05") as m:
        yield m


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _cache(site: MockProcess, backend: str, name: str) -> Iterator[CacheEnv]:
    data = short_dir() / name  # not pytest's tmp_path: other sessions may prune it meanwhile
    data.mkdir()
    try:
        for url in new_db_url(backend, data):
            yield CacheEnv(site, url, data, extra_env={
                "SGCACHE_SCAN_PAGE_SIZE": str(PAGE), "SGCACHE_SCAN_CONCURRENCY": str(CONCURRENCY),
                "SGCACHE_POLL_INTERVAL": "3600", "SGCACHE_SCAN_INTERVAL": "3600"})
    finally:
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture
def reference(site: MockProcess, backend: str) -> Iterator[CacheEnv]:
    yield from _cache(site, backend, "ref")


@pytest.fixture
def resumed(site: MockProcess, backend: str) -> Iterator[CacheEnv]:
    yield from _cache(site, backend, "resumed")


def _env(cache: CacheEnv) -> dict[str, str]:
    return {**os.environ, **cache.env, "PYTHONPATH": str(ROOT)}


def scan_full(cache: CacheEnv) -> str:
    res = subprocess.run([sys.executable, "-m", "sgcache.cli", "scan", "--full"], cwd=ROOT, env=_env(cache),
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def committed_rows(db_url: str) -> int:
    """Rows the running scan has committed, from its progress records (0 before it planned)."""
    engine = make_engine(db_url)
    try:
        schema = Store.recorded_schema(engine)
        if schema is None:
            return 0
        st = Store(engine, schema).state_table
        with engine.connect() as conn:
            values = conn.execute(select(st.c.value).where(st.c.key.startswith("scan:full:"))).scalars().all()
        return sum(int(json.loads(v).get("rows") or 0) for v in values)
    finally:
        engine.dispose()


def kill_scan_after(cache: CacheEnv, rows: int) -> bool:
    """Start `sgcache scan --full` and SIGKILL it once it has committed `rows` rows.

    False if it finished first (nothing was interrupted)."""
    proc = subprocess.Popen([sys.executable, "-m", "sgcache.cli", "scan", "--full"], cwd=ROOT, env=_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if committed_rows(cache.db_url) >= rows:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return True
            time.sleep(0.02)
        assert proc.poll() is not None, "the scan neither progressed nor finished"
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def table_rows(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of every table (entity and link tables), without the bookkeeping
    columns that differ between any two scans (when it was cached, fetch versions)."""
    engine = make_engine(db_url)
    try:
        schema = Store.recorded_schema(engine)
        assert schema is not None
        store = Store(engine, schema)
        out: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for et in store.entities.values():
                cols = [c for c in et.table.c if c.name not in (CACHED_AT, VERSION)]
                out[et.name] = [tuple(r) for r in conn.execute(select(*cols).order_by(et.table.c.id))]
                for fname, a in et.assoc.items():
                    out[f"{et.name}.{fname}"] = [tuple(r) for r in conn.execute(
                        select(a).order_by(a.c.parent_id, a.c.idx))]
        return out
    finally:
        engine.dispose()


def index_names(db_url: str) -> set[str]:
    """Every secondary index in the database (a full scan of empty tables drops them while
    it loads and must build every one back)."""
    from sqlalchemy import inspect
    engine = make_engine(db_url)
    try:
        insp = inspect(engine)
        return {str(ix["name"]) for t in insp.get_table_names() for ix in insp.get_indexes(t)}
    finally:
        engine.dispose()


def state(db_url: str, key: str) -> Any:
    engine = make_engine(db_url)
    try:
        schema = Store.recorded_schema(engine)
        assert schema is not None
        with engine.connect() as conn:
            return Store(engine, schema).get_state(conn, key)
    finally:
        engine.dispose()


def reads(site: MockProcess) -> int:
    return int(site.stats()["requests"].get("read", 0))


def test_a_scan_killed_at_random_points_resumes_and_primes_what_an_uninterrupted_one_does(
        site: MockProcess, reference: CacheEnv, resumed: CacheEnv) -> None:
    site.reset_stats()
    scan_full(reference)
    uninterrupted_reads = reads(site)
    total = sum(state(reference.db_url, "last_full_scan")["rows"].values())

    rng = random.Random(os.environ.get("SGCACHE_TEST_SEED", "14"))
    site.reset_stats()
    kills = 0
    first_kill = 0.0
    for share in sorted(rng.uniform(0.05, 0.9) for _ in range(4)):
        if kill_scan_after(resumed, max(1, int(total * share))):
            kills += 1
            first_kill = first_kill or time.time()
            # Killed part way: nothing is primed, so nothing half-loaded is served.
            assert not state(resumed.db_url, PRIMED)
    assert kills >= 3, "the scan outran the kills: nothing was interrupted"
    out = scan_full(resumed)
    assert "resum" in out, out[-2000:]

    assert table_rows(resumed.db_url) == table_rows(reference.db_url)
    declared = {str(ix.name) for t in Store(make_engine(reference.db_url), Store.recorded_schema(
        make_engine(reference.db_url))).md.tables.values() for ix in t.indexes}  # type: ignore[arg-type]
    assert index_names(reference.db_url) == index_names(resumed.db_url) == declared
    assert state(resumed.db_url, PRIMED) == state(reference.db_url, PRIMED) and state(resumed.db_url, PRIMED)
    # Reads nothing twice beyond the pages in flight at each kill.
    extra = reads(site) - uninterrupted_reads
    assert extra <= kills * REREAD_PER_KILL, (extra, kills)
    # The scan keeps its first run's start (before the first kill): the event watcher
    # replays the site's changes from there.
    started = state(resumed.db_url, "last_full_scan")["started_at"]
    assert started <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first_kill))
    assert state(resumed.db_url, "scan:full") is None  # the progress is gone once done


def test_rows_changed_on_the_site_between_runs_end_up_as_the_site_has_them(
        site: MockProcess, resumed: CacheEnv) -> None:
    sg = site.sg()
    shots = sg.find("Shot", [], ["code"], order=[{"field_name": "id", "direction": "asc"}])
    assert kill_scan_after(resumed, 300), "the scan finished before it could be killed"
    # Whether the killed run still had Shot's last id range (open above) to read: the
    # types run in parallel, so it may have finished Shot before the kill.
    plan = state(resumed.db_url, "scan:full:Shot")
    tail_open = plan is None or any(s[0] == "active" and s[2] is None and not s[4] for s in plan["segments"])
    # Between the runs: a row created (its id is past every cursor), a row retired and
    # one updated whose ids the killed run may already have passed.
    new = sg.create("Shot", {"code": "made between the runs", "project": {"type": "Project", "id": 1}})
    sg.delete("Shot", shots[0]["id"])
    sg.update("Shot", shots[1]["id"], {"code": "renamed between the runs"})
    out = scan_full(resumed)
    assert "resum" in out
    view = CacheView(resumed.db_url)
    try:
        if tail_open:  # the resumed run reads on past every cursor: it finds the new row
            assert view.one("Shot", new["id"], ["code"])["code"] == "made between the runs"
        # What the killed run had already read (and a new row past a range it finished)
        # is replayed from the site's events, which the watcher follows from the first
        # run's start.
        res = subprocess.run([sys.executable, "-m", "sgcache.cli", "events", "--once"], cwd=ROOT,
                             env=_env(resumed), capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        assert compare_all(site, view, ["Shot"]) == []
        assert view.one("Shot", shots[0]["id"], ["code"])["__retired"] is True
        assert view.one("Shot", shots[1]["id"], ["code"])["code"] == "renamed between the runs"
        assert view.one("Shot", new["id"], ["code"])["code"] == "made between the runs"
    finally:
        view.close()
        sg.revive("Shot", shots[0]["id"])
