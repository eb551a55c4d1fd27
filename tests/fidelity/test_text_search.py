"""`text_search` through the cache equals the site's, answered locally where exact.

Generated searches (display-name words of the world, case and Unicode folding, several
terms, types with and without an `image` field, per-type filters, `project_ids`,
limits) through the real client against the site and through the cache: the answers
must be equal, and the site's request counter tells which the cache answered itself.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache.dbs import BACKENDS, new_db_url
from tests.e2e.harness import start_cache

from .rpc_world import WORDS, RpcWorld, rpc_worlds

M = "query_display_name_cache"


@pytest.fixture(scope="module", params=BACKENDS)
def rpc_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcWorld]:
    yield from rpc_worlds(request.param, tmp_path_factory)


#: Types without an `image` field (matches answered locally) and with one (passed through).
NO_IMAGE = ["Note", "Reply", "Group", "Step", "Attachment", "ApiUser", "Playlist", "EventLogEntry", "Tag",
            "PublishedFileType"]
WITH_IMAGE = ["Shot", "Asset", "Task", "Version", "HumanUser"]


def _searches(world: RpcWorld, n: int, seed: int = 5) -> list[tuple[str, dict[str, list[Any]], list[int], Any]]:
    rng = random.Random(seed)
    sg = world.sg_site()
    projects = [p["id"] for p in sg.find("Project", [], [])]
    words = WORDS + ["thread", "THREAD 1", "reply", "note 1", "ss", "STRASSE", "zzz_nothing", "note 3 ",
                     "reply 2", "istanbul", "İSTANBUL", "Shot", "sh0", "bunny", "ref_1", ".jpg", "sgcache", "demo", "created", "Note 1"]
    out = []
    for _ in range(n):
        text = rng.choice(words)
        if rng.random() < 0.3:
            text += " " + rng.choice(words)
        pool = NO_IMAGE if rng.random() < 0.7 else NO_IMAGE + WITH_IMAGE
        types: dict[str, list[Any]] = {}
        for t in rng.sample(pool, rng.randint(1, 3)):
            r = rng.random()
            types[t] = ([] if r < 0.6 else [["id", "greater_than", rng.randint(1, 20)]] if r < 0.8
                        else [{"filter_operator": "any", "filters": [["id", "less_than", 10], ["id", "is", 30]]}])
        pids = rng.sample(projects, 1) if projects and rng.random() < 0.25 else []
        limit = rng.choice([None, None, 1, 3, 10])
        out.append((text, types, pids, limit))
    return out


def test_generated_searches_equal_the_sites(rpc_world: RpcWorld) -> None:
    local = passed = found = 0
    for text, types, pids, limit in _searches(rpc_world, 120):
        want, got, went = rpc_world.both(M, lambda sg, a=(text, types, pids, limit): sg.text_search(*a))
        assert got == want, (text, types, pids, limit)
        if not went:
            local += 1
            found += bool(got["matches"])
            assert all(m["type"] not in WITH_IMAGE for m in got["matches"]), "an image answered locally"
        else:
            passed += 1
    assert local >= 60 and found >= 20 and passed >= 1, (local, found, passed)


def test_matches_with_images_go_to_the_site(rpc_world: RpcWorld) -> None:
    shot = rpc_world.sg_site().find_one("Shot", [], ["code"])
    want, got, went = rpc_world.both(M, lambda sg: sg.text_search(shot["code"], {"Shot": []}))
    assert want["matches"] and got == want and went
    note = rpc_world.sg_site().find_one("Note", [["id", "is", rpc_world.notes[0]]], ["subject"])
    want, got, went = rpc_world.both(M, lambda sg: sg.text_search(note["subject"], {"Note": [], "Shot": []}))
    assert want["matches"] and got == want and not went  # no Shot matches: nothing the cache lacks


def test_refused_searches_are_the_sites_faults(rpc_world: RpcWorld) -> None:
    for call in (lambda sg: sg.text_search("ab", {"Note": []}),
                 lambda sg: sg.text_search("thread", {"NoSuchType": []}),
                 lambda sg: sg.text_search("thread", {"Note": [["no_field", "is", 1]]})):
        want, got, went = rpc_world.both(M, call)
        assert "fault" in want and got == want and went


def test_a_restricted_caller_goes_to_the_site(rpc_world: RpcWorld) -> None:
    if rpc_world.artist is None:
        pytest.skip("the demo has no active Artist")
    want = rpc_world.sg_site(sudo_as_login=rpc_world.artist).text_search("thread", {"Note": []})
    before = rpc_world.site_calls(M)
    got = rpc_world.sg_cache(sudo_as_login=rpc_world.artist).text_search("thread", {"Note": []})
    assert json.dumps(got, default=str) == json.dumps(want, default=str)
    assert rpc_world.site_calls(M) == before + 1


@pytest.mark.parametrize("case", ["rules leave image out", "unprimed"])
def test_unknown_or_unprimed_go_to_the_site(rpc_world: RpcWorld, tmp_path: Any, case: str) -> None:
    """A type whose `image` the rules left out may have one on the site; unprimed types are not answers."""
    backend = "postgresql" if rpc_world.cache.env["SGCACHE_DB_URL"].startswith("postgresql") else "sqlite"
    dbs = new_db_url(backend, tmp_path)  # a fresh database of the world's backend, dropped after
    db_url = next(dbs)
    rules = tmp_path / "rules.txt"
    rules.write_text("*\n!*.image\n")
    env = {"SGCACHE_RULES": str(rules)} if case != "unprimed" else {}
    cache = None
    try:
        cache = start_cache(rpc_world.site, db_url, tmp_path, "--no-sync",
                            scan=case != "unprimed", SGCACHE_AUTH_TTL="86400", **env)
        want = rpc_world.sg_site().text_search("thread", {"Note": [], "Shot": []})
        before = rpc_world.site_calls(M)
        got = cache.sg(rpc_world.site).text_search("thread", {"Note": [], "Shot": []})
        assert json.dumps(got, default=str) == json.dumps(want, default=str)
        assert rpc_world.site_calls(M) == before + 1
    finally:
        if cache is not None:
            cache.stop()
        dbs.close()
