"""Shadow verification finds a wrong local answer, quarantines its shape, and lets it go when repaired.

The cache runs in-process (tests/support/app_in_process.py) so the test decides when the
queued shadow calls run: between a local answer and its shadow call it can corrupt a
row or edit the site, with no timing involved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import select, update

from sgcache.serve.shadow import TokenBucket
from sgcache.serve.shadow_diff import compare
from sgcache.store.quarantine import shape_key, shape_of
from sgcache.store.tables import ACTIVE, Store, make_engine

from ..e2e.harness import Site, sgcache
from ..support.app_in_process import Cache, by_id
from .conftest import prime


@pytest.fixture(scope="module")
def env(site: Site, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = prime(site, db_url, tmp_path_factory.mktemp("data"))
    res = sgcache(env, "events", "--once")  # an event position, as every syncing cache has
    assert res.returncode == 0, res.stderr[-4000:]
    return env


@pytest.fixture(scope="module")
def store(env: dict[str, str], db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    schema = Store.recorded_schema(engine)
    assert schema is not None
    yield Store(engine, schema)
    engine.dispose()


def active_shots(store: Store) -> list[int]:
    t = store["Shot"].table
    with store.engine.connect() as conn:
        return sorted(conn.execute(select(t.c.id).where(t.c[ACTIVE])).scalars())


def corrupt(store: Store, shot: int, code: str) -> None:
    """What a sync bug or a bad disk would do: a cached value the site never had."""
    t = store["Shot"].table
    with store.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == shot).values(code=code))


def test_a_corrupted_row_is_found_quarantined_and_released_by_repair(
        site: Site, env: dict[str, str], store: Store, caplog: pytest.LogCaptureFixture) -> None:
    shot = active_shots(store)[3]
    fields = ["code", "sg_status_list", "sg_sequence"]
    right = site.sg().find_one("Shot", [["id", "is", shot]], ["code"])["code"]

    async def go() -> None:
        async with Cache(site, env) as c:
            # A faithful answer: served locally, asked again of the site, the same.
            assert (await c.call("read", by_id(shot, fields)))["entities"][0]["code"] == right
            await c.shadow.drain()
            assert await c.metric("sgcache_shadow_total", result="match") == 1

            corrupt(store, shot, "CORRUPTED-VALUE")
            served = await c.served()
            assert (await c.call("read", by_id(shot, fields)))["entities"][0]["code"] == "CORRUPTED-VALUE"
            assert await c.served() == served + 1
            with caplog.at_level(logging.WARNING, logger="sgcache.shadow"):
                await c.shadow.drain()  # rate 1: the very read that was wrong is the one found
            assert await c.metric("sgcache_shadow_total", result="mismatch") == 1
            assert await c.metric("sgcache_shadow_total", result="lag") == 0

            # Quarantined: the same shape now goes to the site, and the caller gets the truth.
            res = await c.call("read", by_id(shot, fields))
            assert res["entities"][0]["code"] == right
            assert await c.served() == served + 1
            assert await c.metric("sgcache_passthrough_total", reason="quarantine") == 1
            # Another shape of the type is still answered locally.
            await c.call("read", by_id(shot, ["sg_status_list"]))
            assert await c.served() == served + 2
            await c.shadow.drain()

            # The operator sees it: status page, the report, the log; ids and field names, no values.
            st = await c.status()
            [row] = st["quarantined"]
            assert row["entity_type"] == "Shot" and row["diff"] == {"fields": {str(shot): ["code"]}}
            assert row["shape"]["fields"] == sorted(fields) and row["shape"]["filters"] == ["id is"]
            warning = " ".join(r.getMessage() for r in caplog.records if r.name == "sgcache.shadow")
            assert f"{shot}: code" in warning and "CORRUPTED" not in warning
            rep = sgcache(env, "shadow", "report")
            assert rep.returncode == 1 and f"#{row['id']}" in rep.stdout and "QUARANTINED" in rep.stdout, rep
            assert "CORRUPTED" not in rep.stdout and site.script_key not in rep.stdout
            with store.engine.connect() as conn:
                stored = json.dumps([dict(r) for r in conn.execute(select(store.shadow_table)).mappings()])
            assert "CORRUPTED" not in stored and site.script_key not in stored

            # Cleared by the operator: answered locally again, still wrong, found again.
            cleared = sgcache(env, "shadow", "clear", str(row["id"]))
            assert cleared.returncode == 0 and "cleared 1 " in cleared.stdout, cleared
            assert (await c.status())["quarantined"] == []
            assert (await c.call("read", by_id(shot, fields)))["entities"][0]["code"] == "CORRUPTED-VALUE"
            await c.shadow.drain()
            assert await c.metric("sgcache_shadow_total", result="mismatch") == 2
            assert len((await c.status())["quarantined"]) == 1

            # `validate data --repair` puts the row right and lifts the quarantine.
            res_v = sgcache(env, "validate", "data", "Shot", "--repair", "--settle", "0")
            assert res_v.returncode == 1, res_v.stdout + res_v.stderr  # found, repaired, clean after
            assert "lifted 1 shadow quarantine" in res_v.stdout
            assert (await c.status())["quarantined"] == []
            served = await c.served()
            assert (await c.call("read", by_id(shot, fields)))["entities"][0]["code"] == right
            assert await c.served() == served + 1
            await c.shadow.drain()
            assert await c.metric("sgcache_shadow_total", result="match") == 3  # with the other shape's
            assert sgcache(env, "shadow", "report").returncode == 0
            assert "cleared 0 " in sgcache(env, "shadow", "clear", "--type", "Shot").stdout
    asyncio.run(go())


def test_a_site_edit_after_the_answer_is_lag_not_a_mismatch(site: Site, env: dict[str, str], store: Store) -> None:
    shot = active_shots(store)[5]
    sg = site.sg()
    before = sg.find_one("Shot", [["id", "is", shot]], ["code", "sg_status_list"])

    async def go() -> None:
        async with Cache(site, env) as c:
            filtered = {"type": "Shot", "return_fields": ["code", "sg_status_list"], "return_only": "active",
                        "filters": {"logical_operator": "and", "conditions": [
                            {"path": "sg_status_list", "relation": "is", "values": [before["sg_status_list"]]}]},
                        "sorts": [{"field_name": "id", "direction": "asc"}],
                        "paging": {"entities_per_page": 500, "current_page": 1}}
            await c.call("read", by_id(shot, ["code", "sg_status_list"]))
            await c.call("read", filtered)
            # The site changes the entity after the cache answered, before the shadow call.
            other = "fin" if before["sg_status_list"] != "fin" else "ip"
            sg.update("Shot", shot, {"code": before["code"] + "-edited", "sg_status_list": other})
            try:
                await c.shadow.drain()
            finally:
                sg.update("Shot", shot, {"code": before["code"], "sg_status_list": before["sg_status_list"]})
            assert await c.metric("sgcache_shadow_total", result="lag") == 2
            assert await c.metric("sgcache_shadow_total", result="mismatch") == 0
            assert c.shadow.quarantine.get("Shot", set()) == set()
    asyncio.run(go())


def test_shadow_calls_keep_to_the_budget_and_stop_while_the_site_fails(
        site: Site, env: dict[str, str], store: Store) -> None:
    shots = active_shots(store)[:40]

    async def go() -> None:
        async with Cache(site, env, shadow_budget=2.0) as c:
            await c.call("read", by_id(shots[0], ["code"]))  # the caller is verified once
            await c.shadow.drain()
            site.reset_stats()
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 1.6:  # every read sampled (rate 1), far more than 2/s
                await c.call("read", by_id(shots[n % len(shots)], ["code"]))
                await c.shadow.drain()
                n += 1
            elapsed = time.monotonic() - t0
            reads = site.stats()["requests"].get("read", 0)
            assert n > 20 and 2 <= reads <= 1 + 2 * elapsed, (n, reads, elapsed)
            assert await c.metric("sgcache_shadow_skipped_total", reason="budget") == n - reads

        async with Cache(site, env) as c:
            await c.call("read", by_id(shots[0], ["code"]))
            await c.shadow.drain()
            httpx.post(site.admin_url + "/faults", json={"outage": 60}, timeout=5)
            try:
                for s in shots[:5]:
                    await c.call("read", by_id(s, ["code"]))  # still answered locally
                    await c.shadow.drain()
            finally:
                httpx.post(site.admin_url + "/faults", json={"reset": True}, timeout=5)
            assert await c.metric("sgcache_shadow_skipped_total", reason="site_error") == 1
            assert await c.metric("sgcache_shadow_skipped_total", reason="site_down") == 4
            assert await c.metric("sgcache_shadow_total", result="mismatch") == 0
    asyncio.run(go())


def test_shapes_ignore_values_and_keep_names() -> None:
    a = shape_of("read", by_id(1, ["code", "sg_status_list"]))
    b = shape_of("read", by_id(2, ["sg_status_list", "code"]))
    assert shape_key(a) == shape_key(b)
    assert shape_key(a) != shape_key(shape_of("read", by_id(1, ["code"])))
    deep = {"type": "Shot", "filters": {"logical_operator": "or", "conditions": [
        {"path": "sg_sequence.Sequence.code", "relation": "in", "values": ["secret"]},
        {"logical_operator": "and", "conditions": [{"path": "code", "relation": "contains", "values": ["x"]}]}]}}
    s = shape_of("read", deep)
    assert s["filters"] == ["code contains", "sg_sequence.Sequence.code in"]
    assert "secret" not in json.dumps(s)
    # a note thread's and a text search's: the types they read, never the note or the text
    n1 = shape_of("note_thread_contents", {"note_id": 1, "entity_fields": {"Reply": ["sg_x"]}})
    assert n1 == shape_of("note_thread_contents", {"note_id": 2, "entity_fields": {"Reply": ["sg_x"]}})
    assert n1["type"] == "Note" and n1["types"] == ["Attachment", "Note", "Reply"] and n1["fields"] == ["Reply.sg_x"]
    t1 = shape_of("query_display_name_cache", {"text": "secret", "entity_types": {"Shot": deep["filters"], "Asset": {}}})
    assert t1 == shape_of("query_display_name_cache", {"text": "other", "entity_types": {"Asset": {}, "Shot": deep["filters"]}})
    assert t1["type"] == "Asset,Shot" and "Shot.sg_sequence.Sequence.code in" in t1["filters"]
    assert "secret" not in json.dumps(t1)


def test_compare_sees_what_the_client_sees() -> None:
    e = [{"type": "Shot", "id": 1, "code": "a"}, {"type": "Shot", "id": 2, "code": "b"}]
    assert not compare("read", {"entities": e, "paging_info": {"has_next_page": False}},
                       {"entities": e, "paging_info": {"has_next_page": False, "extra": 1}})
    d = compare("read", {"entities": e}, {"entities": [e[1], {**e[0], "code": "z"}]})
    assert d.fields == {1: ["code"]} and d.order
    d = compare("read", {"entities": e[:1]}, {"entities": e[1:]})
    assert (d.only_cache, d.only_site) == ([1], [2])
    thread = [{"type": "Note", "id": 1, "content": "a"}, {"type": "Reply", "id": 1, "content": "b"}]
    assert not compare("note_thread_contents", thread, [dict(r) for r in thread])
    d = compare("note_thread_contents", thread, [thread[1], {**thread[0], "content": "z"}])
    assert d.other == ["Note 1: content", "order differs"] and not d.ids()
    d = compare("query_display_name_cache", {"matches": thread[:1], "terms": ["a"]},
                {"matches": thread[1:], "terms": ["a"]})
    assert d.other == ["only in the cache: Note 1", "only on the site: Reply 1"]


def test_the_token_bucket_never_bursts() -> None:
    now = [0.0]
    b = TokenBucket(2.0, clock=lambda: now[0])
    assert b.try_take() and not b.try_take()
    now[0] = 0.4
    assert not b.try_take()
    now[0] = 0.5
    assert b.try_take()
    now[0] = 10.0
    assert b.try_take() and not b.try_take()


def _set(store: Store, etype: str, eid: int, field: str, value: str) -> None:
    """A stored text value and its folded shadow, as a sync bug would have written them."""
    t = store[etype].table
    with store.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == eid).values({field: value, field + "__ci": value.casefold()}))


def test_a_wrong_note_thread_or_text_search_is_found_and_quarantined(
        site: Site, env: dict[str, str], store: Store) -> None:
    """Note threads and text searches answered from the store are sampled too: a wrong one is a
    mismatch, its shape is quarantined (`Note`; the searched types), and it goes to the site."""
    # the cache's position past earlier tests' site edits (events on Shot would explain as lag)
    assert sgcache(env, "events", "--once").returncode == 0
    shot = active_shots(store)[7]
    code = site.sg().find_one("Shot", [["id", "is", shot]], ["code"])["code"]
    notes = store["Note"].table
    with store.engine.connect() as conn:
        note_ids = list(conn.execute(select(notes.c.id).where(notes.c[ACTIVE]).order_by(notes.c.id).limit(40))
                        .scalars())
    search = {"text": code, "entity_types": {"Shot": {"logical_operator": "and", "conditions": []}}}

    async def go() -> None:
        async with Cache(site, env) as c:
            # a note whose thread the cache answers itself
            for note in note_ids:
                served = await c.served()
                right = await c.call("note_thread_contents", {"note_id": note})
                if await c.served() == served + 1:
                    break
            else:
                pytest.fail("no note thread answered locally")
            await c.shadow.drain()
            assert await c.metric("sgcache_shadow_total", result="match") == 1
            t = store["Note"].table
            with store.engine.connect() as conn:
                content = conn.execute(select(t.c.content).where(t.c.id == note)).scalar()
            _set(store, "Note", note, "content", "WRONG-THREAD-TEXT")
            _set(store, "Shot", shot, "code", "renamed-by-a-bug")  # the search misses the shot
            try:
                wrong = await c.call("note_thread_contents", {"note_id": note})
                assert wrong != right
                assert (await c.call("query_display_name_cache", search))["matches"] == []
                assert await c.served() == served + 3
                await c.shadow.drain()
                assert await c.metric("sgcache_shadow_total", result="mismatch") == 2
                assert await c.metric("sgcache_shadow_total", result="lag") == 0
                rows = {r["method"]: r for r in (await c.status())["quarantined"]}
                assert set(rows) == {"note_thread", "text_search"}
                assert rows["note_thread"]["entity_type"] == "Note"
                assert rows["note_thread"]["diff"] == {"other": [f"Note {note}: content"]}
                assert rows["text_search"]["entity_type"] == "Shot"
                assert rows["text_search"]["diff"] == {"other": [f"only on the site: Shot {shot}"]}
                # quarantined: both go to the site now, and the callers get the site's answers
                assert await c.call("note_thread_contents", {"note_id": note}) == right
                found = (await c.call("query_display_name_cache", search))["matches"]
                assert [m["id"] for m in found] == [shot]
                assert await c.served() == served + 3
                for m in ("note_thread_contents", "query_display_name_cache"):
                    assert await c.metric("sgcache_requests_total", method=m, outcome="passthrough",
                                          reason="quarantine") == 1
            finally:
                _set(store, "Note", note, "content", content)
                _set(store, "Shot", shot, "code", code)
                assert sgcache(env, "shadow", "clear", "--all").returncode == 0
    asyncio.run(go())
