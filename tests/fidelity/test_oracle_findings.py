"""What the independent mock found (issue 17): each discrepancy as a fixed differential case.

Since the mock stopped sharing the cache's filter parser, grouping and link names, the
random suites found these; each case here pins the behaviour both sides now agree on
(and which side was changed, in its comment), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from .world import World


def _cond(path: str, relation: str, *values: Any) -> dict[str, Any]:
    return {"path": path, "relation": relation, "values": list(values)}


def _read(etype: str, *conds: Any, **extra: Any) -> dict[str, Any]:
    return {"type": etype, "return_fields": ["id"], "filters": {"logical_operator": "and", "conditions": list(conds)},
            **extra}


def test_name_is_on_multi_entity_fields_is_the_sites_to_decide(world: World) -> None:
    # protocol.md §5.1 documents name_is for entity fields only; the cache answered it on
    # multi-entity fields by itself. Now it asks the site, which refuses it.
    params = _read("Task", _cond("task_assignees", "name_is", "anyone"))
    site, cache = world.both("read", params)
    assert "fault" in site and cache == site


def test_a_condition_in_list_form_is_the_sites_to_decide(world: World) -> None:
    # the client sends {"path", "relation", "values"} only (protocol.md §4.2); the cache
    # answered [path, relation, value] lists by itself. Now it asks the site.
    params = {"type": "Shot", "return_fields": ["code"],
              "filters": {"logical_operator": "and", "conditions": [["code", "contains", "0"]]}}
    site, cache = world.both("read", params)
    assert "fault" in site and cache == site


def test_link_groups_come_in_id_order(world: World) -> None:
    # both sides sorted link groups by display name; the client's summarize docstring lists
    # Step groups in id order (Client 1, Online 2, ..., Comp 8). Both changed.
    params = {"type": "Task", "summaries": [{"field": "id", "type": "record_count"}],
              "filters": {"logical_operator": "and", "conditions": []},
              "grouping": [{"field": "step", "type": "exact", "direction": "asc"}]}
    site, cache = world.both("summarize", params)
    assert cache == site
    ids = [g["group_value"]["id"] for g in site["results"]["groups"] if g["group_value"]]
    assert ids == sorted(ids) and len(ids) > 2


def test_a_deep_checkbox_sort_through_a_link_of_another_type_sorts_as_null(world: World) -> None:
    # Task.created_by is a HumanUser or an ApiUser: for Tasks made by a person the value of
    # created_by.ApiUser.generate_events reads null (protocol.md §4.4), and nulls sort first
    # ascending; the cache sorted them as False, among the scripts' False values.
    params = _read("Task", sorts=[{"field_name": "created_by.ApiUser.generate_events", "direction": "asc"},
                                  {"field_name": "id", "direction": "desc"}],
                   paging={"entities_per_page": 500, "current_page": 1})
    site, cache = world.both("read", params)
    assert cache == site
