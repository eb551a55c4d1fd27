"""Fields added on the site appear in the cache (backfilled) and removed ones go, no restart."""

from __future__ import annotations

import sqlalchemy as sa

from tests.support.procs import MockProcess

from .support import CacheEnv, CacheView, site_one


def ready_flags(db_url: str, etype: str) -> dict[str, bool]:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as c:
            return {r[0]: bool(r[1]) for r in c.execute(sa.text(
                "SELECT field_name, ready FROM _sgcache_fields WHERE entity_type = :t"), {"t": etype})}
    finally:
        eng.dispose()


def test_new_fields_are_added_and_backfilled_then_removed(mock: MockProcess, cache: CacheEnv) -> None:
    cache.start("events")
    cache.ctrl("poll")
    sg = mock.sg()
    sg.update("Shot", 2, {"description": "before the field existed"})
    text = sg.schema_field_create("Shot", "text", "Sync Note")
    links = sg.schema_field_create("Shot", "multi_entity", "Sync Refs", {"valid_types": ["Asset"]})
    sg.update("Shot", 1, {text: "hello", links: [{"type": "Asset", "id": 1}, {"type": "Asset", "id": 2}]})

    before = cache.ctrl("status")["schema_generation"]
    out = cache.ctrl("poll")  # sees the DisplayColumn events: re-reads the schema, backfills
    if "sync pass failed" in cache.log("events"):
        open("/tmp/sgcache-schema-test.log", "w").write(cache.log("events"))
    assert out["schema_generation"] > before, out
    flags = ready_flags(cache.db_url, "Shot")
    assert flags[text] and flags[links]
    view = CacheView(cache.db_url)
    try:
        for sid in (1, 2):
            assert view.one("Shot", sid, [text, links, "description"]) == \
                site_one(sg, "Shot", sid, [text, links, "description"])
    finally:
        view.close()

    sg.update("Shot", 2, {text: "after", links: [{"type": "Asset", "id": 3}]})  # plain events now
    cache.ctrl("poll")
    view = CacheView(cache.db_url)
    try:
        assert view.one("Shot", 2, [text, links]) == site_one(sg, "Shot", 2, [text, links])
    finally:
        view.close()

    assert sg.schema_field_delete("Shot", text) is True  # writes no event: the periodic check finds it
    cache.ctrl("scan")
    view = CacheView(cache.db_url)
    try:
        assert text not in view.store["Shot"].fields and links in view.store["Shot"].fields
        cols = {c["name"] for c in sa.inspect(view.engine).get_columns("Shot")}
        assert text not in cols and text + "__ci" not in cols
    finally:
        view.close()
