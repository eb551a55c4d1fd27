"""Text filters with an embedded NUL: the cache's answer is the site's (issue 11, finding 7).

Before: on SQLite `code contains "\\0"` gave every shot through the cache and none from the
site, and `ends_with`/`not_contains` differed too, because SQLite's LIKE stops at a NUL.
Filter text holding NUL now goes to the site (both stores), and text the cache holds with
a NUL in it (SQLite can hold it) is matched whole, locally.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from ..cache.dbs import new_db_url
from .world import World, start_world

NEEDLES = ["\0", "sh\0", "\0a", "0\0", "tail\0", "zz\0tail", "ZZ\0TAIL"]
TEXT_RELATIONS = ["contains", "not_contains", "starts_with", "ends_with", "is", "is_not", "in", "not_in"]


def shots(*conds: Any, op: str = "and") -> dict[str, Any]:
    return {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": op, "conditions": [
        {"path": p, "relation": r, "values": list(v)} for p, r, *v in conds]},
        "paging": {"entities_per_page": 500, "current_page": 1}}


@pytest.mark.parametrize("needle", NEEDLES, ids=repr)
def test_filter_text_holding_nul_gets_the_sites_answer(world: World, needle: str) -> None:
    for params in [shots(("code", rel, needle)) for rel in TEXT_RELATIONS] + [
            shots(("sg_status_list", "in", needle, "ip")), shots(("sg_sequence", "name_contains", needle)),
            shots(("sg_sequence.Sequence.code", "ends_with", needle)), shots(("tag_list", "name_is", needle)),
            shots(("code", "is", "x"), ("code", "contains", needle), op="or")]:
        site, cache = world.both("read", params)
        assert cache == site, json.dumps(params)


# -- text the cache holds with a NUL in it ------------------------------------------------

STORED = ["zz\0tail", "ZZ\0TAİL", "\0", "a\0b\0c"]


def _seed(world: World) -> None:
    for code in STORED:
        world.call(world.site.url, "create", {"type": "Shot", "fields": [
            {"field_name": "code", "value": code}, {"field_name": "tag_list", "value": [code]}]})
    world.call(world.site.url, "create", {"type": "Sequence", "fields": [{"field_name": "code", "value": "seq\0Ω"}]})


@pytest.fixture(scope="module")
def nul_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A SQLite cache holding text with NUL in it (PostgreSQL cannot hold such text)."""
    tmp = tmp_path_factory.mktemp("nul-world")
    for url in new_db_url("sqlite", tmp):
        yield from start_world(url, tmp, demo=20, seed_data=_seed)


def passed_through(world: World) -> float:
    """The cache's count of reads it passed through (its /metrics)."""
    text = world.client.get(world.cache.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sgcache_passthrough_total{"))


@pytest.mark.parametrize("needle", ["tail", "TAIL", "ail", "zz", "i̇l", "b", "c", "a", "Ω", "ω"])
def test_stored_text_holding_nul_is_answered_locally_as_the_site_does(nul_world: World, needle: str) -> None:
    before = passed_through(nul_world)
    for params in [shots(("code", rel, needle)) for rel in ("contains", "not_contains", "starts_with",
                                                             "ends_with")] + [
            shots(("tag_list", "name_contains", needle)), shots(("sg_sequence", "name_ends_with", needle))]:
        site, cache = nul_world.both("read", params)
        assert cache == site, json.dumps(params)
    assert passed_through(nul_world) == before  # answered by the cache itself
