"""What the cache does not answer reaches the site unchanged, with the caller's credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from .harness import Cache, Site, sgcache, start_cache, start_site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = start_site()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cache(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    tmp = tmp_path_factory.mktemp("pt")
    # No event watcher: write-through alone must show the caller its writes, and a quiet
    # cache keeps the site's request counters meaningful for the other tests here.
    c = start_cache(site, f"sqlite:///{tmp / 'cache.sqlite'}", tmp, "--no-sync")
    yield c
    c.stop()


def test_info_is_the_sites_plus_an_sgcache_key(site: Site, cache: Cache) -> None:
    mine = cache.sg(site).info()
    theirs = site.sg().info()
    assert mine.pop("sgcache")["status"] == "ok"
    assert mine == theirs


def test_schema_calls_are_passed_through_verbatim(site: Site, cache: Cache) -> None:
    assert cache.sg(site).schema_field_read("Shot") == site.sg().schema_field_read("Shot")


def test_create_then_read_own_write_from_the_cache(site: Site, cache: Cache) -> None:
    sg = cache.sg(site)
    seq = sg.find_one("Sequence", [], ["code", "project"])
    shot = sg.create("Shot", {"code": "pt_new_0001", "sg_sequence": {"type": "Sequence", "id": seq["id"]},
                              "project": seq["project"]})
    site.reset_stats()
    got = sg.find_one("Shot", [["id", "is", shot["id"]]], ["code", "sg_sequence"])
    assert got == {"type": "Shot", "id": shot["id"], "code": "pt_new_0001",
                   "sg_sequence": {"type": "Sequence", "id": seq["id"], "name": seq["code"]}}
    assert site.stats()["requests"].get("read", 0) == 0, "the read was served by the cache"
    sg.update("Shot", shot["id"], {"code": "pt_new_0001_renamed"})
    assert sg.find_one("Shot", [["id", "is", shot["id"]]], ["code"])["code"] == "pt_new_0001_renamed"
    assert sg.delete("Shot", shot["id"]) is True
    assert sg.find_one("Shot", [["id", "is", shot["id"]]], ["code"]) is None
    assert sg.find("Shot", [["id", "is", shot["id"]]], ["code"], retired_only=True)[0]["id"] == shot["id"]


def test_upload_goes_through_the_cache_to_the_site(site: Site, cache: Cache, tmp_path: Path) -> None:
    sg = cache.sg(site)
    shot = sg.find_one("Shot", [], ["code"])
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello from the cache\n" * 100)
    site.reset_stats()
    att_id = sg.upload("Shot", shot["id"], str(f), display_name="notes.txt")
    assert isinstance(att_id, int)
    out = tmp_path / "back.txt"
    site.sg().download_attachment({"type": "Attachment", "id": att_id}, file_path=str(out))
    assert out.read_bytes() == f.read_bytes()


def test_browser_pages_redirect_to_the_site(site: Site, cache: Cache) -> None:
    r = httpx.get(cache.url + "/detail/Shot/1", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == site.url + "/detail/Shot/1"


def test_malformed_json_is_a_fault_not_a_500(cache: Cache) -> None:
    r = httpx.post(cache.url + "/api3/json", content=b"{not json")
    assert r.status_code == 200 and r.json()["exception"] is True


def test_schema_dump_filter_and_a_narrow_cache(site: Site, tmp_path: Path) -> None:
    """`schema dump` + `schema filter` choose what is cached; the rest passes through."""
    env_site = {"SGCACHE_SHOTGUN_URL": site.url, "SGCACHE_SCRIPT_NAME": site.script_name,
                "SGCACHE_SCRIPT_KEY": site.script_key}
    import os
    env = {**os.environ, **env_site}
    dump = tmp_path / "site.json"
    assert sgcache(env, "schema", "dump", "-o", str(dump)).returncode == 0
    assert "Shot" in json.loads(dump.read_text())["schema_read"]
    rules = tmp_path / "rules.txt"
    # the callers' accounts and permission groups too: who may see what is read from them
    rules.write_text("Shot\nSequence\nProject\nHumanUser\nApiUser\nPermissionRuleSet\n!*.image\n")
    chosen = tmp_path / "chosen.json"
    res = sgcache(env, "schema", "filter", "--rules", str(rules), "-i", str(dump), "-o", str(chosen))
    assert res.returncode == 0, res.stderr
    assert set(json.loads(chosen.read_text())["schema_read"]) == {"Shot", "Sequence", "Project", "HumanUser", "ApiUser",
                                                                  "PermissionRuleSet"}
    c = start_cache(site, f"sqlite:///{tmp_path / 'narrow.sqlite'}", tmp_path, "--no-sync",
                    SGCACHE_SCHEMA=str(chosen))
    try:
        sg = c.sg(site)
        sg.find_one("Shot", [], ["code"])
        site.reset_stats()
        assert sg.find("Shot", [], ["code"]) == site.sg().find("Shot", [], ["code"])
        assert site.stats()["requests"].get("read", 0) == 1  # only our own comparison read
        site.reset_stats()
        assert sg.find("Task", [], ["content"]) == site.sg().find("Task", [], ["content"])
        assert site.stats()["requests"].get("read", 0) == 2  # Task is not cached: passed through
    finally:
        c.stop()


def test_types_without_a_completed_full_scan_are_passed_through(site: Site, tmp_path: Path) -> None:
    """An empty or half-loaded table is not an answer: unprimed types go to the site."""
    from .harness import cache_env
    db = f"sqlite:///{tmp_path / 'partial.sqlite'}"
    res = sgcache(cache_env(site, db, tmp_path), "scan", "--full", "--types",
                 "Sequence,Project,HumanUser,ApiUser,PermissionRuleSet")
    assert res.returncode == 0, res.stderr
    c = start_cache(site, db, tmp_path, "--no-sync", scan=False)
    try:
        sg = c.sg(site)
        sg.find_one("Sequence", [], ["code"])
        site.reset_stats()
        assert sg.find("Sequence", [], ["code"]) == site.sg().find("Sequence", [], ["code"])
        assert site.stats()["requests"].get("read", 0) == 1  # primed: served locally
        site.reset_stats()
        assert sg.find("Shot", [], ["code"]) == site.sg().find("Shot", [], ["code"])
        assert site.stats()["requests"].get("read", 0) == 2  # Shot never scanned: passed through
    finally:
        c.stop()
