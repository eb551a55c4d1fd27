"""`sgcache rebuild` re-imports types while `sgcache serve` keeps answering: no read fails."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, update

from sgcache.read.engine import Passthrough
from sgcache.store.tables import Store, make_engine
from sgcache.sync.rebuild import (
    Readiness,
    RebuildGate,
    clear_marks,
    involved_types,
    mark_rebuilding,
    rebuild,
)
from sgcache.sync.scan import PRIMED, primed_types
from sgcache.sync.validate import validate_counts, validate_data
from sgcache.upstream import Upstream

from ..e2e.harness import Cache, Site, normalize, start_cache

QUERIES: list[tuple[str, list[Any], list[str]]] = [
    ("Shot", [], ["code", "sg_sequence", "assets", "sg_status_list"]),
    ("Shot", [["code", "contains", "0"]], ["code"]),
    ("Task", [["entity", "type_is", "Shot"]], ["content", "entity"]),  # Shot names through the link
    ("Task", [["entity.Shot.code", "contains", "1"]], ["content"]),
    ("Asset", [], ["code"]),  # not rebuilt: stays served locally
]


@pytest.fixture(scope="module")
def cache(site: Site, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    tmp = tmp_path_factory.mktemp("rebuild")
    c = start_cache(site, db_url, tmp, SGCACHE_POLL_INTERVAL="0.5")
    yield c
    c.stop()


async def _validate(fn: Any, store: Store, site: Site) -> Any:
    up = Upstream(site.url, script_name=site.script_name, script_key=site.script_key)
    try:
        return await fn(store, up, ["Shot"], settle=0)
    finally:
        await up.aclose()


def not_ready_passthroughs(cache: Cache) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(httpx.get(cache.url + "/metrics").text):
        for s in fam.samples:
            if s.name == "sgcache_requests_total" and s.labels.get("reason") == "not_ready":
                total += s.value
    return total


def test_involved_types_cover_links_and_deep_paths(db_url: str, cache: Cache) -> None:
    engine = make_engine(db_url)
    schema = Store.recorded_schema(engine)
    engine.dispose()
    assert schema is not None
    assert involved_types(schema, {"type": "Asset", "return_fields": ["code"]}) == {"Asset"}
    assert "Shot" in involved_types(schema, {"type": "Task", "return_fields": ["entity"]})
    assert "Shot" in involved_types(schema, {"type": "Task", "filters": {"logical_operator": "and", "conditions": [
        {"path": "entity.Shot.code", "relation": "is", "values": ["x"]}]}})
    assert "Project" in involved_types(schema, {"type": "Asset", "include_archived_projects": False})


def test_rebuild_under_concurrent_reads_fails_no_read(site: Site, cache: Cache, db_url: str) -> None:
    expected = {i: normalize(site.sg().find(t, f, fields, order=[{"field_name": "id", "direction": "asc"}]))
                for i, (t, f, fields) in enumerate(QUERIES)}
    # Plant damage the rebuild must repair: a lost row, a wrong value, an extra row.
    engine = make_engine(db_url)
    schema = Store.recorded_schema(engine)
    assert schema is not None
    store = Store(engine, schema)
    shot_ids = [e["id"] for e in expected[0]]
    t = store["Shot"].table
    with engine.begin() as conn:
        conn.execute(delete(t).where(t.c.id == shot_ids[0]))
        conn.execute(update(t).where(t.c.id == shot_ids[1]).values(code="wrong", code__ci="wrong"))
        store.upsert(conn, "Shot", [{"id": 888_888, "code": "ghost"}], active=True)
    engine.dispose()

    failures: list[str] = []
    mismatches: list[str] = []
    reads = [0]
    stop = threading.Event()

    def reader(k: int) -> None:
        sg = cache.sg(site)
        n = 0
        while not stop.is_set():
            i = (n + k) % len(QUERIES)
            n += 1
            typ, f, fields = QUERIES[i]
            try:
                got = normalize(sg.find(typ, f, fields, order=[{"field_name": "id", "direction": "asc"}]))
            except Exception as e:  # any failure at all is the bug this test is about
                failures.append(f"{typ} {f}: {type(e).__name__}: {e}")
                continue
            reads[0] += 1
            if got != expected[i] and rebuilt.is_set():
                mismatches.append(f"{typ} {f}")

    rebuilt = threading.Event()
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.5)
        before = not_ready_passthroughs(cache)
        proc = subprocess.run([sys.executable, "-m", "sgcache.cli", "rebuild", "Shot", "--grace", "1.5"],
                              env=cache.env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Shot" in proc.stdout and "1 removed" in proc.stdout, proc.stdout
        during = not_ready_passthroughs(cache) - before
        time.sleep(0.7)  # every server has seen the mark go away (TTL 0.5 s)
        rebuilt.set()
        time.sleep(1.0)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    assert not failures, failures[:5]
    assert during > 0, "reads involving Shot were passed through while it was rebuilt"
    assert not mismatches, mismatches[:5]
    assert reads[0] > 20
    engine = make_engine(db_url)
    store = Store(engine, schema)
    try:
        [counts] = asyncio.run(_validate(validate_counts, store, site))
        [data] = asyncio.run(_validate(validate_data, store, site))
    finally:
        engine.dispose()
    assert counts.ok and data.ok, (counts.to_json(), data.to_json())
    status = httpx.get(cache.url + "/status.json").json()
    assert status["state"]["rebuilding"] == {}


def test_the_gate_passes_through_only_what_involves_the_rebuilt_type(db_url: str, cache: Cache) -> None:
    engine = make_engine(db_url)
    schema = Store.recorded_schema(engine)
    assert schema is not None
    store = Store(engine, schema)
    gate = RebuildGate(Readiness(store, ttl=0), lambda: schema)
    mark_rebuilding(store, ["Shot"], "test")
    try:
        with pytest.raises(Passthrough, match="Shot is being rebuilt"):
            gate({"type": "Task", "return_fields": ["entity"]})
        gate({"type": "Asset", "return_fields": ["code"]})  # not involved: no Passthrough
    finally:
        clear_marks(store, ["Shot"])
        engine.dispose()


def test_a_rebuild_primes_a_type_that_never_had_a_full_scan(site: Site, db_url: str, cache: Cache) -> None:
    engine = make_engine(db_url)
    schema = Store.recorded_schema(engine)
    assert schema is not None
    store = Store(engine, schema)
    with engine.begin() as conn:
        store.set_state(conn, PRIMED, sorted(set(store.get_state(conn, PRIMED)) - {"Asset"}))

    async def go() -> Any:
        up = Upstream(site.url, script_name=site.script_name, script_key=site.script_key)
        try:
            return await rebuild(store, up, ["Asset"], grace=0)
        finally:
            await up.aclose()
    try:
        res = asyncio.run(go())
        assert res.rows["Asset"] == len(site.sg().find("Asset", [], ["id"])) + \
            len(site.sg().find("Asset", [], ["id"], retired_only=True))
        assert "Asset" in primed_types(store)
    finally:
        engine.dispose()
