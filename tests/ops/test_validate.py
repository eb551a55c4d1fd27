"""Validation finds differences planted in the cache, and `--repair` puts them right."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest
from sqlalchemy import delete, update

from sgcache.store.tables import ACTIVE, Store, make_engine
from sgcache.sync.validate import validate_counts, validate_data
from sgcache.upstream import Upstream

from ..e2e.harness import Site, sgcache
from .conftest import prime


@pytest.fixture(scope="module")
def env(site: Site, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return prime(site, db_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def store(env: dict[str, str], db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    schema = Store.recorded_schema(engine)
    assert schema is not None
    yield Store(engine, schema)
    engine.dispose()


def upstream(site: Site) -> Upstream:
    return Upstream(site.url, script_name=site.script_name, script_key=site.script_key)


def run(coro_fn: Any, site: Site, *args: Any, **kw: Any) -> Any:
    async def go() -> Any:
        up = upstream(site)
        try:
            return await coro_fn(args[0], up, *args[1:], **kw)
        finally:
            await up.aclose()
    return asyncio.run(go())


def shots(store: Store) -> list[int]:
    t = store["Shot"].table
    with store.engine.connect() as conn:
        return sorted(conn.execute(t.select().with_only_columns(t.c.id).where(t.c[ACTIVE])).scalars())


def test_a_freshly_primed_cache_validates_clean(site: Site, env: dict[str, str], store: Store) -> None:
    res = sgcache(env, "validate", "counts")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MISMATCH" not in res.stdout and "Shot" in res.stdout
    reports = run(validate_data, site, store, ["Shot", "Task"], limit=50)
    assert [(r.entity_type, r.ok, r.compared) for r in reports] == [("Shot", True, 24), ("Task", True, 50)]
    assert "code" in reports[0].fields


def test_counts_find_a_deleted_row_an_extra_row_and_a_flipped_retired_flag(site: Site, store: Store) -> None:
    ids = shots(store)
    gone, flipped = ids[0], ids[1]
    t = store["Shot"].table
    with store.engine.begin() as conn:
        conn.execute(delete(t).where(t.c.id == gone))
        conn.execute(update(t).where(t.c.id == flipped).values({ACTIVE: False}))
        store.upsert(conn, "Shot", [{"id": 999_999, "code": "ghost"}], active=True)
    [rep] = run(validate_counts, site, store, ["Shot"], settle=0)
    assert (rep.missing, rep.extra, rep.wrong_state) == ([gone], [999_999], [flipped])
    assert rep.cache["retired"] == rep.site["retired"] + 1

    [rep] = run(validate_counts, site, store, ["Shot"], settle=0, do_repair=True)
    assert not rep.ok and rep.repaired >= 3  # plus the other side of their links
    [rep] = run(validate_counts, site, store, ["Shot"], settle=0)
    assert rep.ok, rep.to_json()


def test_data_finds_changed_values_and_repairs_them(site: Site, store: Store) -> None:
    ids = shots(store)
    a, b = ids[2], ids[3]
    t = store["Shot"].table
    with store.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == a).values(code="tampered", code__ci="tampered"))
        store.replace_links(conn, "Shot", "assets", {b: []})
        conn.execute(update(t).where(t.c.id == b).values(sg_cut_in=-1))
    [rep] = run(validate_data, site, store, ["Shot"], settle=0)
    found = {(d.entity_id, d.field) for d in rep.diffs}
    assert (a, "code") in found and (b, "sg_cut_in") in found
    site_assets = site.sg().find_one("Shot", [["id", "is", b]], ["assets"])["assets"]
    assert ((b, "assets") in found) == bool(site_assets)
    assert {d.entity_id for d in rep.diffs} == {a, b}
    diff = next(d for d in rep.diffs if d.field == "code")
    assert diff.cache == "tampered" and diff.site != "tampered"

    [rep] = run(validate_data, site, store, ["Shot"], settle=0, do_repair=True)
    assert rep.repaired >= 2
    [rep] = run(validate_data, site, store, ["Shot"], settle=0)
    assert rep.ok, rep.to_json()


def test_data_with_filters_fields_and_paging(site: Site, store: Store) -> None:
    ids = shots(store)
    [rep] = run(validate_data, site, store, ["Shot"], fields=["code"], limit=5, page=2, settle=0)
    assert rep.ok and rep.compared == 5 and rep.fields == ["code"]
    [rep] = run(validate_data, site, store, ["Shot"], filters=[["id", "in", ids[:3]]], fields=["code"], settle=0)
    assert rep.ok and rep.compared == 3


def test_data_compares_retired_entities_on_request(site: Site, store: Store) -> None:
    retired = site.sg().find("Task", [], ["content"], retired_only=True)
    assert retired, "the demo studio has retired tasks"
    t = store["Task"].table
    with store.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == retired[0]["id"]).values(content="x", content__ci="x"))
    [rep] = run(validate_data, site, store, ["Task"], fields=["content"], retired=True, settle=0)
    assert rep.compared == len(retired)
    assert [(d.entity_id, d.cache) for d in rep.diffs] == [(retired[0]["id"], "x")]
    [rep] = run(validate_data, site, store, ["Task"], fields=["content"], retired=True, settle=0, do_repair=True)
    [rep] = run(validate_data, site, store, ["Task"], fields=["content"], retired=True, settle=0)
    assert rep.ok, rep.to_json()


def test_the_cli_exits_non_zero_on_a_mismatch_and_repairs(site: Site, env: dict[str, str], store: Store,
                                                         backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("exit codes and output do not depend on the store; the library tests cover PostgreSQL")
    ids = shots(store)
    victim = ids[4]
    t = store["Shot"].table
    with store.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == victim).values(description="planted"))
        conn.execute(update(t).where(t.c.id == ids[5]).values({ACTIVE: False}))
    res = sgcache(env, "validate", "data", "Shot", "--fields", "description", "--json", "--settle", "0")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert [(d["id"], d["field"], d["cache"]) for d in out["reports"][0]["diffs"]] == [(victim, "description", "planted")]
    assert out["reports"][0]["missing"] == [ids[5]]  # retired in the cache, active on the site
    res = sgcache(env, "validate", "counts", "Shot", "--repair", "--settle", "0")
    assert res.returncode == 1 and f"wrong state (1): {ids[5]}" in res.stdout
    assert "after repair: clean" in res.stdout, res.stdout
    res = sgcache(env, "validate", "data", "Shot", "--repair", "--settle", "0")
    assert res.returncode == 1 and "description: site=" in res.stdout and "after repair: clean" in res.stdout, res.stdout
    [rep] = run(validate_data, site, store, ["Shot"], settle=0)
    assert rep.ok, rep.to_json()


def test_differences_that_pending_events_explain_are_in_flight(site: Site, store: Store) -> None:
    sg = site.sg()
    shot = sg.find_one("Shot", [], ["code", "project", "sg_sequence"])
    with store.engine.begin() as conn:  # the cache has applied every event so far
        last = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
        store.set_state(conn, "last_event_id", last["id"] if last else 0)
    new = sg.create("Shot", {"code": "inflight_1", "project": shot["project"]})
    sg.update("Shot", shot["id"], {"code": shot["code"] + "_x"})
    [rep] = run(validate_counts, site, store, ["Shot"], settle=0)
    assert rep.ok and rep.in_flight == [new["id"]]
    [rep] = run(validate_data, site, store, ["Shot"], fields=["code"], settle=0)
    assert rep.ok and set(rep.in_flight) == {new["id"], shot["id"]}
    sg.update("Shot", shot["id"], {"code": shot["code"]})
    sg.delete("Shot", new["id"])
