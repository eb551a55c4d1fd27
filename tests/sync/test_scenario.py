"""The same create/update/link/unlink/delete/revive story reaches the cache three ways:
write-through (client -> `sgcache serve` -> site), events only (written on the site, then
`ctrl poll`), and scans only (an events-off script, then `ctrl scan`).
"""

from __future__ import annotations

from typing import Any, Callable

from tests.support.procs import MockProcess

from .support import NOEVENTS, CacheEnv, CacheView, site_one

FIELDS = {"Shot": ["code", "tasks", "assets", "project", "sg_sequence", "description"],
          "Task": ["content", "entity", "project", "sg_status_list"],
          "Asset": ["code", "shots", "tasks"]}


def check(site: Any, view: CacheView, ents: list[tuple[str, int]], step: str) -> None:
    for etype, eid in ents:
        fields = [f for f in FIELDS[etype] if f in view.store[etype].fields]
        want = site_one(site, etype, eid, fields)
        got = view.one(etype, eid, fields)
        assert got == want, f"after {step}: {etype} {eid}\n site: {want}\ncache: {got}"


def logged(view: CacheView, source: str) -> list[dict[str, Any]]:
    """The audit log rows one sync path wrote."""
    t = view.store.log_table
    with view.engine.connect() as conn:
        return [dict(r) for r in conn.execute(t.select().where(t.c.source == source)).mappings()]


def story(writer: Any, site: Any, view: CacheView, sync: Callable[[], None]) -> None:
    """Each step is checked right after `sync()` against the site, entity by entity."""
    shot = site.find_one("Shot", [], ["project"], order=[{"field_name": "id", "direction": "asc"}])
    other = site.find_one("Shot", [["id", "is_not", shot["id"]], ["project", "is", shot["project"]]], ["project"])
    asset = site.find_one("Asset", [["project", "is", shot["project"]]], ["code"])
    sh, ot, at = ("Shot", shot["id"]), ("Shot", other["id"]), ("Asset", asset["id"])

    task = writer.create("Task", {"content": "story task", "entity": {"type": "Shot", "id": shot["id"]},
                                  "project": shot["project"]})
    tk = ("Task", task["id"])
    sync()
    check(site, view, [tk, sh], "create")

    writer.update("Task", task["id"], {"content": "story task v2", "sg_status_list": "ip"})
    writer.update("Shot", shot["id"], {"description": "changed by the story"})
    sync()
    check(site, view, [tk, sh], "update")

    writer.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": asset["id"]}]},
                  multi_entity_update_modes={"assets": "add"})
    sync()
    check(site, view, [sh, at], "link")

    writer.update("Task", task["id"], {"entity": {"type": "Shot", "id": other["id"]}})
    writer.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": asset["id"]}]},
                  multi_entity_update_modes={"assets": "remove"})
    sync()
    check(site, view, [tk, sh, ot, at], "unlink")

    assert writer.delete("Task", task["id"]) is True
    sync()
    check(site, view, [tk, sh, ot], "delete")
    assert view.one("Task", task["id"])["__retired"] is True

    assert writer.revive("Task", task["id"]) is True
    sync()
    check(site, view, [tk, sh, ot], "revive")
    assert view.one("Task", task["id"])["__retired"] is False


def test_write_through(mock: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    url = cache.serve()
    writer = mock.sg()
    writer.base_url = url  # not enough on its own: build a client on the cache's URL
    import shotgun_api3
    client = shotgun_api3.Shotgun(url, script_name=mock.script_name, api_key=mock.script_key)
    story(client, mock.sg(), view, lambda: None)  # no poll, no scan: write-through alone
    rows = logged(view, "write")
    assert {r["ref"] for r in rows} >= {"create", "update", "delete", "revive"}
    assert any(r["entity_type"] == "Task" and "content" in (r["detail"] or "") for r in rows)


def test_events_only(mock: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    cache.start("events")
    cache.ctrl("poll")
    story(mock.sg(), mock.sg(), view, lambda: cache.ctrl("poll"))
    rows = logged(view, "event")
    assert any(r["outcome"] == "retired" for r in rows) and any("Revival" in (r["detail"] or "") for r in rows)


def test_scans_only(mock: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    cache.start("events")
    cache.ctrl("poll")
    bot = mock.sg(script_name=NOEVENTS[0], api_key=NOEVENTS[1])
    story(bot, mock.sg(), view, lambda: cache.ctrl("scan"))
    assert "interval" in {r["ref"] for r in logged(view, "scan")}


def test_scans_catch_retirements_that_leave_updated_at_alone(mock: MockProcess, cache: CacheEnv,
                                                           view: CacheView) -> None:
    """A retirement by an events-off script need not move `updated_at`: the retired sets differ."""
    cache.start("events")
    cache.ctrl("poll")
    bot = mock.sg(script_name=NOEVENTS[0], api_key=NOEVENTS[1])
    site = mock.sg()
    asset = site.find_one("Asset", [], ["updated_at"], order=[{"field_name": "id", "direction": "desc"}])
    assert bot.delete("Asset", asset["id"]) is True
    assert site.find_one("Asset", [["id", "is", asset["id"]]], ["updated_at"], retired_only=True)["updated_at"] \
        == asset["updated_at"]
    cache.ctrl("scan")
    assert view.one("Asset", asset["id"], ["code"])["__retired"] is True
    assert bot.revive("Asset", asset["id"]) is True
    cache.ctrl("scan")
    assert view.one("Asset", asset["id"], ["code", "shots"]) == site_one(site, "Asset", asset["id"], ["code", "shots"])
    assert "retired-set" in {r["ref"] for r in logged(view, "scan")}


def test_write_through_batch(mock: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    """Every request of a passthrough `batch` is in the cache when the response returns."""
    import shotgun_api3
    client = shotgun_api3.Shotgun(cache.serve(), script_name=mock.script_name, api_key=mock.script_key)
    site = mock.sg()
    victim = site.find_one("Task", [["entity", "is", {"type": "Shot", "id": 3}]], ["id"])
    out = client.batch([
        {"request_type": "create", "entity_type": "Task",
         "data": {"content": "batched", "entity": {"type": "Shot", "id": 3}, "project": {"type": "Project", "id": 1}}},
        {"request_type": "update", "entity_type": "Shot", "entity_id": 3, "data": {"description": "batched"}},
        {"request_type": "delete", "entity_type": "Task", "entity_id": victim["id"]},
    ])
    new = out[0]["id"]
    for etype, eid in (("Task", new), ("Shot", 3), ("Task", victim["id"])):
        check(site, view, [(etype, eid)], "batch")
    assert view.one("Task", victim["id"])["__retired"] is True
