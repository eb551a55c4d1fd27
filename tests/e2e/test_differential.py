"""Differential end-to-end test: the real client against the site and against the cache.

The mock site serves a demo studio; `sgcache scan --full` primes a cache on SQLite or
PostgreSQL; `sgcache serve` answers. Every query must return identical results both
ways, and the ones the cache answers locally must not reach the site at all.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from ..cache.dbs import BACKENDS, new_db_url
from .harness import Cache, Site, normalize, start_cache, start_site

SHOT_FIELDS = ["code", "sg_sequence", "sg_status_list", "sg_cut_in", "description", "tasks",
               "assets", "sg_frame_rate", "created_at", "created_by", "project", "tag_list"]

# (entity type, filters, fields, find kwargs, answered locally?)
QUERIES: list[tuple[str, Any, list[str], dict[str, Any], bool]] = [
    ("Shot", [], SHOT_FIELDS, {}, True),
    ("Shot", [["code", "contains", "0"]], ["code"], {"order": [{"field_name": "code", "direction": "desc"}]}, True),
    ("Shot", [["sg_status_list", "in", ["ip", "fin"]]], ["sg_status_list"], {}, True),
    ("Shot", [["sg_status_list", "not_in", ["ip", "fin"]]], ["sg_status_list"], {}, True),
    ("Shot", [["sg_cut_in", "between", 1000, 1100]], ["sg_cut_in"], {}, True),
    ("Shot", [["sg_cut_in", "is", None]], ["sg_cut_in"], {}, True),
    ("Shot", [["sg_cut_in", "is_not", None]], ["sg_cut_in"],
     {"order": [{"field_name": "sg_cut_in", "direction": "asc"}]}, True),
    ("Shot", [["sg_cut_in", "greater_than", 1000]], ["sg_cut_in"], {}, True),
    ("Shot", [["sg_frame_rate", "less_than", 30.0]], ["sg_frame_rate"], {}, True),
    ("Shot", [["sg_sequence.Sequence.code", "starts_with", "SQ"]], ["code"], {}, True),
    ("Shot", [["tasks.Task.content", "contains", "anim"]], ["code"], {}, True),
    ("Shot", [["sg_status_list", "is", "ip"], ["code", "ends_with", "0"]], ["code"], {"filter_operator": "any"}, True),
    ("Shot", [{"filter_operator": "any", "filters": [["sg_status_list", "is", "fin"], ["sg_cut_in", "is", None]]},
              ["code", "contains", "1"]], ["code", "sg_status_list", "sg_cut_in"], {}, True),
    ("Shot", [["description", "not_contains", "the"]], ["description"], {}, True),
    ("Shot", [["description", "contains", "CAFÉ"]], ["description"], {}, True),
    ("Shot", [["id", "not_in", [1, 2, 3]]], ["code"], {}, True),
    ("Shot", [["created_by", "is_not", {"type": "HumanUser", "id": 1}]], ["created_by"], {}, True),
    ("Shot", [["sg_sequence", "is", {"type": "Sequence", "id": 1}]], ["code"], {}, True),
    ("Shot", [], ["code"], {"retired_only": True}, True),
    ("Shot", [], ["code"], {"limit": 5, "page": 2, "order": [{"field_name": "code", "direction": "asc"}]}, True),
    ("Shot", [], ["code", "project"], {"include_archived_projects": False}, True),
    ("Shot", [], ["code", "sg_sequence.Sequence.code"],
     {"order": [{"field_name": "sg_sequence.Sequence.code", "direction": "asc"},
                {"field_name": "code", "direction": "desc"}]}, True),
    ("Task", [["entity", "type_is", "Shot"]], ["entity", "step", "task_assignees"], {}, True),
    ("Task", [["entity.Shot.sg_sequence.Sequence.code", "contains", "0"]], ["content"], {}, True),
    ("Task", [["task_assignees", "is", {"type": "HumanUser", "id": 1}]], ["task_assignees"], {}, True),
    ("Task", [["task_assignees", "is", None]], ["content"], {}, True),
    ("Task", [["start_date", "greater_than", "2025-01-01"]], ["start_date", "due_date"],
     {"order": [{"field_name": "start_date", "direction": "desc"}, {"field_name": "due_date", "direction": "asc"}]},
     True),
    ("Task", [], ["entity.Shot.code", "step.Step.code", "entity.Asset.code"], {}, True),
    ("Version", [["entity", "in", [{"type": "Shot", "id": 1}, {"type": "Shot", "id": 2}]]], ["code", "entity"], {}, True),
    ("HumanUser", [["name", "contains", "é"]], ["name", "login"], {}, True),
    ("Project", [], ["name", "archived", "sg_status"], {}, True),
    ("Asset", [["shots", "is_not", None]], ["code", "shots"], {}, True),
    ("Note", [], ["subject", "note_links", "addressings_to"], {}, True),
    # Passed through: time-relative, image fields.
    ("Shot", [["created_at", "in_last", 3000, "DAY"]], ["code"], {}, False),
    ("Shot", [], ["code", "image"], {"limit": 3}, False),
]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = start_site()
    yield s
    s.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def cache(request: pytest.FixtureRequest, site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    tmp = tmp_path_factory.mktemp("cache")
    for url in new_db_url(request.param, tmp):
        c = start_cache(site, url, tmp, "--no-sync")
        yield c
        c.stop()


def _find(sg: Any, etype: str, filters: Any, fields: list[str], kw: dict[str, Any]) -> Any:
    return normalize(sg.find(etype, filters, fields, **kw))


@pytest.mark.parametrize("etype, filters, fields, kw, local", QUERIES,
                         ids=[f"{q[0]}-{i}" for i, q in enumerate(QUERIES)])
def test_cache_answers_exactly_like_the_site(site: Site, cache: Cache, etype: str, filters: Any,
                                             fields: list[str], kw: dict[str, Any], local: bool) -> None:
    want = _find(site.sg(), etype, filters, fields, kw)
    got = _find(cache.sg(site), etype, filters, fields, kw)
    assert got == want


def test_local_answers_never_reach_the_site(site: Site, cache: Cache) -> None:
    sg = cache.sg(site)
    sg.find_one("Shot", [], ["code"])  # credentials verified once
    site.reset_stats()
    for etype, filters, fields, kw, local in QUERIES:
        if local:
            sg.find(etype, filters, fields, **kw)
    reads = site.stats().get("requests", {}).get("read", 0)
    assert reads == 0
    for etype, filters, fields, kw, local in QUERIES:
        if not local:
            sg.find(etype, filters, fields, **kw)
    assert site.stats().get("requests", {}).get("read", 0) >= 1


def test_bad_credentials_get_the_sites_authentication_fault(site: Site, cache: Cache) -> None:
    import shotgun_api3
    bad = site.sg(cache.url, api_key="not-the-key", connect=False)
    with pytest.raises(shotgun_api3.AuthenticationFault):
        bad.find("Shot", [], ["code"])
