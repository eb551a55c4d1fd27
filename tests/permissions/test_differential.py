"""As each role, random reads and summaries give the site's answer through the cache.

For every role of the mock (Admin, Manager, Artist, Vendor and the custom Client), a user
of that role (the site's script acting as them, `sudo_as_login`) sends the same generated
requests to the site and to the cache: filters with every relation, deep paths through
single and multi links, multi-entity return fields, sorts and paging, summaries and
groupings. Values come from everything on the site, so filters and links keep crossing
into rows the user may not see. The answers must be identical, whether the cache answered
or passed the request through; and for each role the cache must answer some itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.fidelity.conftest import examples
from tests.fidelity.strategies import Gen

from .conftest import ROLES, UserWorld, users_by_role

TYPES = ["Shot", "Task", "Version", "Asset", "Sequence", "Note", "HumanUser", "Project", "Playlist",
         "PublishedFile", "Step", "Group", "Reply", "Attachment", "CustomEntity01"]
#: Restricted types a role reads most: drawn twice as often.
FOCUS = ["Shot", "Task", "Note", "Version", "Asset", "Project"]


def _as(world: UserWorld, role: str) -> UserWorld:
    users = users_by_role(world).get(role)
    assert users, f"the demo site has no active {role}"
    return world.as_user(users[0]["login"])


def _sent(world: UserWorld) -> int:
    return world.upstream_reads("read") + world.upstream_reads("summarize")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_through_the_cache_what_the_site_shows(perm_world: UserWorld, role: str) -> None:
    world = _as(perm_world, role)
    gen = Gen(world, TYPES + FOCUS)
    counts = {"sent": 0}
    world.call(world.cache.url, "read", {"type": "Shot", "return_fields": ["id"]})  # verify the caller once
    before = _sent(world)

    @examples(200)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        method = "summarize" if data.draw(st.integers(0, 3)) == 0 else "read"
        params = data.draw(gen.summarize() if method == "summarize" else gen.read())
        note(f"{role} {method} {json.dumps(params, ensure_ascii=False)}")
        site, cache = world.both(method, params)
        counts["sent"] += 1
        assert cache == site, f"{role} {method} {json.dumps(params, ensure_ascii=False)}"
    check()
    forwarded = _sent(world) - before - counts["sent"]  # the site answered each request once itself
    local = counts["sent"] - forwarded
    print(f"\n{role}: {counts['sent']} requests, {local} answered by the cache")
    assert local >= counts["sent"] // 10, (role, local, counts["sent"])


def test_hand_picked_reads_cross_into_hidden_rows(perm_world: UserWorld) -> None:
    """The reads a vendor's tool makes, including multi-entity fields listing tasks and
    people the vendor may not see: the cache gives the site's answer, and answers the
    plain ones itself."""
    world = _as(perm_world, "Vendor")
    reads: list[dict[str, Any]] = [
        {"type": "Task", "return_fields": ["content", "project", "sg_status_list"]},
        {"type": "Shot", "return_fields": ["code", "tasks"]},
        {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "and", "conditions": [
            {"path": "tasks.Task.sg_status_list", "relation": "is", "values": ["ip"]}]}},
        {"type": "Note", "return_fields": ["subject", "addressings_to"], "return_paging_info": True},
        {"type": "Version", "return_fields": ["code"], "paging": {"entities_per_page": 2, "current_page": 2}},
        {"type": "Project", "return_fields": ["name", "users"]},
        {"type": "Sequence", "return_fields": ["code"]},
    ]
    world.call(world.cache.url, "read", reads[0])
    local = 0
    for params in reads:
        before = _sent(world)
        site, cache = world.both("read", params)
        assert cache == site, params
        local += _sent(world) - before == 1
    assert local >= 2


@pytest.mark.parametrize("role", ["Artist", "Client", "Vendor"])
def test_reads_of_one_row_by_id_show_only_the_callers_rows(perm_world: UserWorld, role: str) -> None:
    """`find_one` by id, the commonest call: the site's answer for rows of the caller's
    projects and of others (nothing), answered by the cache itself for plain fields."""
    world = _as(perm_world, role)
    shots = world.ids["Shot"][:40] + [999999]
    projects = world.ids["Project"]
    world.call(world.cache.url, "read", {"type": "Shot", "return_fields": ["id"]})
    before, sent = _sent(world), 0
    for etype, ids, fields in [("Shot", shots, ["code", "sg_sequence", "project", "sg_cut_in"]),
                               ("Shot", shots, ["code", "sg_status_list"]),
                               ("Project", projects, ["name", "archived"])]:
        for i in ids:
            params = {"type": etype, "return_fields": fields, "filters": {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "is", "values": [i]}]}, "paging": {"entities_per_page": 1, "current_page": 1}}
            site, cache = world.both("read", params)
            sent += 1
            assert cache == site, params
    local = sent - (_sent(world) - before - sent)
    assert local >= sent // 2, (role, local, sent)
