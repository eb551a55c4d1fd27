"""Random summaries must come back identical from the site and from the cache.

Every summary type over fields of every kind (deep ones too), nested groupings of every
grouping type, filters as in the read test, include_archived_projects.
"""

from __future__ import annotations

import json

from hypothesis import given, note
from hypothesis import strategies as st

from .conftest import examples
from .strategies import Gen
from .test_read_fidelity import DEMO_TYPES
from .world import World


def test_random_summaries_match_the_site(world: World) -> None:
    gen = Gen(world, DEMO_TYPES)
    before = world.upstream_reads("summarize")
    sent = [0]

    @examples(100)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        params = data.draw(gen.summarize())
        note(json.dumps(params, ensure_ascii=False))
        sent[0] += 1
        world.explain(params, "summarize")
        site, cache = world.both("summarize", params)
        assert cache == site, json.dumps(params, ensure_ascii=False)
    check()
    forwarded = world.upstream_reads("summarize") - before - sent[0]
    print(f"\nfidelity: {sent[0]} summaries, {forwarded} passed through by the cache")
    for reason, n in world.passthrough_reasons.most_common(30):
        print(f"{n:6d}  {reason}")
    assert forwarded <= 0.6 * sent[0], "most summaries the test sends should be answered locally"


def test_random_summaries_on_the_real_site_schema_match(site_world: World) -> None:
    from .conftest import SEEDED_TYPES
    gen = Gen(site_world, [t for t in SEEDED_TYPES if t in site_world.schema])

    @examples(50)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        params = data.draw(gen.summarize())
        note(json.dumps(params, ensure_ascii=False))
        site, cache = site_world.both("summarize", params)
        assert cache == site, json.dumps(params, ensure_ascii=False)
    check()
