"""`note_thread_read` through the cache equals the site's, answered locally where exact.

Every thread of the world (demo notes with people's replies, threads made through the
client: script replies, attachments, deletions, ties in `created_at`) is read through
the cache and from the site with several `entity_fields`; the answers must be equal, and
the site's request counter tells which the cache answered itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache.dbs import BACKENDS, new_db_url
from tests.e2e.harness import start_cache

from .rpc_world import RpcWorld, rpc_worlds

M = "note_thread_contents"


@pytest.fixture(scope="module", params=BACKENDS)
def rpc_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcWorld]:
    yield from rpc_worlds(request.param, tmp_path_factory)


ENTITY_FIELDS: list[dict[str, Any]] = [
    {},
    {"Note": ["subject", "note_links", "project", "content", "sg_status_list"]},
    {"Reply": ["entity", "created_by"], "Attachment": ["filename", "attachment_links", "project"]},
    {"Note": ["project.Project.name", "user", "addressings_to"], "Shot": ["code"]},
    {"Attachment": ["created_by.HumanUser.login"]},
]


def _all_notes(world: RpcWorld) -> list[int]:
    demo = [n["id"] for n in world.sg_site().find("Note", [], [])]
    return sorted(set(demo) | set(world.notes))


def test_every_thread_equals_the_sites(rpc_world: RpcWorld) -> None:
    local = passed = 0
    for i, note_id in enumerate(_all_notes(rpc_world)):
        fields = ENTITY_FIELDS[i % len(ENTITY_FIELDS)]
        want, got, went = rpc_world.both(M, lambda sg, n=note_id, f=fields: sg.note_thread_read(n, f))
        assert got == want, (note_id, fields)
        local += not went
        passed += went
    # the threads made to be exact are answered locally, whatever their entity_fields
    for note_id in rpc_world.local_notes:
        want, got, went = rpc_world.both(M, lambda sg, n=note_id: sg.note_thread_read(n))
        assert got == want and not went, note_id
    assert local >= len(rpc_world.local_notes) and passed > 0, (local, passed)


def test_a_reply_by_a_person_goes_to_the_site(rpc_world: RpcWorld) -> None:
    """Its `user` carries the person's image URL, which the cache does not hold."""
    assert rpc_world.person_notes
    for note_id in rpc_world.person_notes:
        want, got, went = rpc_world.both(M, lambda sg, n=note_id: sg.note_thread_read(n))
        assert got == want and went, note_id
        assert any(item["type"] == "Reply" and "image" in (item["user"] or {}) for item in want)


def test_a_reply_and_an_attachment_of_one_second_go_to_the_site(rpc_world: RpcWorld) -> None:
    """Only the site knows which of the two came first."""
    assert rpc_world.tie_notes
    for note_id in rpc_world.tie_notes:
        want, got, went = rpc_world.both(M, lambda sg, n=note_id: sg.note_thread_read(n))
        assert got == want and went, note_id


def test_deleted_items_and_missing_notes(rpc_world: RpcWorld) -> None:
    sg = rpc_world.sg_site()
    note_id = rpc_world.local_notes[0]
    reply = sg.create("Reply", {"entity": {"type": "Note", "id": note_id}, "content": "gone soon"})
    sg.delete("Reply", reply["id"])  # created and deleted after the scan: the cache never saw it
    want, got, _ = rpc_world.both(M, lambda s: s.note_thread_read(note_id))
    assert got == want
    for bad in (10**7, -1):  # no such Note: the site's Fault
        want, got, went = rpc_world.both(M, lambda s, b=bad: s.note_thread_read(b))
        assert "fault" in want and got == want and went
    want, got, went = rpc_world.both(M, lambda s: s.note_thread_read(note_id, {"Note": ["no_such_field"]}))
    assert got == want and went


def test_a_restricted_caller_goes_to_the_site(rpc_world: RpcWorld) -> None:
    if rpc_world.artist is None:
        pytest.skip("the demo has no active Artist")
    note_id = rpc_world.local_notes[0]
    want = rpc_world.sg_site(sudo_as_login=rpc_world.artist).note_thread_read(note_id)
    before = rpc_world.site_calls(M)
    got = rpc_world.sg_cache(sudo_as_login=rpc_world.artist).note_thread_read(note_id)
    assert json.dumps(got, default=str) == json.dumps(want, default=str)
    assert rpc_world.site_calls(M) == before + 1


@pytest.mark.parametrize("case", ["uncached Reply", "unprimed"])
def test_uncached_or_unprimed_types_go_to_the_site(rpc_world: RpcWorld, tmp_path: Any, case: str) -> None:
    backend = "postgresql" if rpc_world.cache.env["SGCACHE_DB_URL"].startswith("postgresql") else "sqlite"
    dbs = new_db_url(backend, tmp_path)  # a fresh database of the world's backend, dropped after
    db_url = next(dbs)
    rules = tmp_path / "rules.txt"
    rules.write_text("*\n!Reply.*\n")
    env = {"SGCACHE_RULES": str(rules)} if case == "uncached Reply" else {}
    cache = None
    try:
        cache = start_cache(rpc_world.site, db_url, tmp_path, "--no-sync",
                            scan=case != "unprimed", SGCACHE_AUTH_TTL="86400", **env)
        note_id = rpc_world.local_notes[0]
        want = rpc_world.sg_site().note_thread_read(note_id)
        before = rpc_world.site_calls(M)
        got = cache.sg(rpc_world.site).note_thread_read(note_id)
        assert json.dumps(got, default=str) == json.dumps(want, default=str)
        assert rpc_world.site_calls(M) == before + 1
    finally:
        if cache is not None:
            cache.stop()
        dbs.close()
