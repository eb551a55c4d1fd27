"""Random reads must come back identical from the site and from the cache.

Each example is one raw api3 `read` (filters with every relation per field type, nested
groups, deep paths through single and multi links, deep return fields, multi-key sorts,
both paging protocols, return_only, include_archived_projects, now and then a malformed
request) sent to the mock site and to sgcache; the parsed bodies — entities, paging info
or the Fault — must be equal.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from ..e2e.harness import normalize
from .conftest import SEEDED_TYPES, examples
from .strategies import Gen
from .world import World

DEMO_TYPES = ["Shot", "Task", "Version", "Asset", "Sequence", "Note", "HumanUser", "Project", "Playlist",
              "PublishedFile", "CustomEntity01", "Step", "Group", "Reply", "Attachment"]


def _diff(world: World, params: dict[str, Any]) -> None:
    note(json.dumps(params, ensure_ascii=False))
    site, cache = world.both("read", params)
    assert cache == site, json.dumps(params, ensure_ascii=False)


def test_random_reads_match_the_site(world: World) -> None:
    gen = Gen(world, DEMO_TYPES)
    before = world.upstream_reads()
    sent = [0]

    @examples(100)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        params = data.draw(gen.read())
        sent[0] += 1
        world.explain(params)
        _diff(world, params)
    check()
    forwarded = world.upstream_reads() - before - sent[0]  # the site saw each request once itself
    print(f"\nfidelity: {sent[0]} reads, {forwarded} passed through by the cache")
    for reason, n in world.passthrough_reasons.most_common(30):
        print(f"{n:6d}  {reason}")


def test_random_reads_on_the_real_site_schema_match(site_world: World) -> None:
    gen = Gen(site_world, [t for t in SEEDED_TYPES if t in site_world.schema])

    @examples(50)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        _diff(site_world, data.draw(gen.read()))
    check()


def test_random_finds_through_the_client_match_the_site(world: World) -> None:
    """`limit`/`page` combinations as the real client pages them (both paging loops)."""
    gen = Gen(world, ["Shot", "Task", "Version", "Note"])
    site_sg, cache_sg = world.site.sg(), world.cache.sg(world.site)

    @examples(25)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        params = data.draw(gen.read())
        kw = {"limit": data.draw(st.sampled_from([0, 1, 2, 7, 499, 500, 501, 1200])),
              "page": data.draw(st.sampled_from([0, 0, 1, 2, 3])),
              "order": params.get("sorts"),
              "retired_only": params.get("return_only") == "retired"}
        if params.get("include_archived_projects") is False:
            kw["include_archived_projects"] = False
        args = (params["type"], params["filters"], params.get("return_fields") or ["id"])
        note(repr((args, kw)))
        outcomes = []
        for sg in (site_sg, cache_sg):
            try:
                outcomes.append(("ok", normalize(sg.find(*args, **kw))))
            except Exception as e:  # noqa: BLE001 - the same error both ways is the point
                outcomes.append((type(e).__name__, str(e)))
        assert outcomes[1] == outcomes[0], repr((args, kw))
    check()
