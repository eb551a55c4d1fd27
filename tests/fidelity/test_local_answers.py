"""Everything docs/relations.md marks "answered locally" is answered without the site.

One read per (data type, relation) marked local, on a field of that type in the built-in
schema (plus one through a deep path), every cacheable field as a return field and every
sortable one as a sort: the site's request counter must not move, and the answers must
still equal the site's.
"""

from __future__ import annotations

from typing import Any

from sgcache.read.engine import SORTABLE
from sgcache.read.support import support_table
from sgcache.store.field_types import field_type

from .world import World

SAMPLE: dict[str, Any] = {
    "text": "a", "number": 1, "float": 1.5, "currency": 1.5, "percent": 1, "duration": 1, "timecode": 1,
    "date": "2025-01-01", "date_time": "2025-01-01T00:00:00Z", "checkbox": True, "list": "ip",
    "status_list": "ip", "entity_type": "Shot", "color": "1,2,3", "uuid": "x", "footage": "01-00",
    "tag_list": "hero",
}


def _field_of(world: World, dt: str) -> tuple[str, Any]:
    for etype in ("CustomEntity01", "Task", "Shot", "Note", "Version", "Project"):
        for fname, fs in world.schema[etype].fields.items():
            if fs.data_type == dt:
                return etype, fs
    raise AssertionError(f"no {dt} field in the built-in schema")


def _values(dt: str, rel: str, fs: Any) -> list[Any]:
    v = {"type": fs.valid_types[0], "id": 1} if fs.is_link else SAMPLE[dt]
    if rel in ("in", "not_in"):
        return [v, None]
    if rel in ("between", "not_between"):
        return [v, None]
    if rel in ("type_is", "type_is_not"):
        return [fs.valid_types[0]]
    if rel.startswith("name_") or rel in ("contains", "not_contains", "starts_with", "ends_with"):
        return ["a"]
    return [v]


def _reads(world: World) -> list[dict[str, Any]]:
    reads = []
    for dt, rels in support_table().items():
        etype, fs = _field_of(world, dt)
        for rel, local in rels.items():
            if not local:
                continue
            for path, root in ((fs.name, etype), (f"entity.{etype}.{fs.name}", "Version")):
                if root == "Version" and etype not in world.schema["Version"].fields["entity"].valid_types:
                    continue
                reads.append({"type": root, "return_fields": ["id"], "filters": {
                    "logical_operator": "and",
                    "conditions": [{"path": path, "relation": rel, "values": _values(dt, rel, fs)}]}})
    for etype in ("CustomEntity01", "Task", "Note", "Version"):
        ent = world.schema[etype]
        cacheable = [f for f, fs in ent.fields.items() if field_type(fs).cacheable]
        sortable = [f for f in cacheable if isinstance(field_type(ent.fields[f]), SORTABLE)]
        reads.append({"type": etype, "return_fields": cacheable, "filters": [],
                      "sorts": [{"field_name": f, "direction": "desc"} for f in sortable]})
    return reads


def test_reads_marked_local_never_reach_the_site(world: World) -> None:
    reads = _reads(world)
    assert len(reads) > 100
    before = world.upstream_reads()
    answers = [world.call(world.cache.url, "read", params) for params in reads]
    if world.upstream_reads() != before:  # name the culprits
        forwarded = []
        for params in reads:
            n = world.upstream_reads()
            world.call(world.cache.url, "read", params)
            if world.upstream_reads() != n:
                forwarded.append(params)
        assert forwarded == [], "reads marked 'answered locally' were passed through"
    for params, mine in zip(reads, answers):
        assert mine == world.call(world.site.url, "read", params), params


def test_summaries_of_every_type_and_grouping_never_reach_the_site(world: World) -> None:
    from sgcache.read.summarize import GROUP_TYPES, SUMMARY_TYPES
    fields = {"record_count": "id", "count": "entity", "sum": "duration", "maximum": "est_in_mins",
              "minimum": "sg_progress", "average": "duration", "earliest": "start_date", "latest": "due_date",
              "percentage": "milestone", "status_percentage": "sg_status_list", "status_list": "sg_status_list",
              "checked": "milestone", "unchecked": "milestone"}
    by = {"exact": "sg_status_list", "entitytype": "entity", "firstletter": "content"}
    requests = []
    for kind in sorted(GROUP_TYPES):
        field = by.get(kind) or ("due_date" if kind in ("day", "week", "month", "quarter", "year",
                                                        "clustered_date", "oneday", "fivedays") else "duration")
        requests.append({"type": "Task", "filters": {"logical_operator": "and", "conditions": [
                             {"path": "project", "relation": "is", "values": [{"type": "Project", "id": 1}]}]},
                         "summaries": [{"field": fields[s], "type": s} for s in sorted(SUMMARY_TYPES)],
                         "grouping": [{"field": field, "type": kind, "direction": "desc"},
                                      {"field": "step", "type": "exact", "direction": "asc"}]})
    assert set(fields) == set(SUMMARY_TYPES)
    before = world.upstream_reads("summarize")
    answers = [world.call(world.cache.url, "summarize", p) for p in requests]
    assert world.upstream_reads("summarize") == before, "a summary marked 'answered locally' was passed through"
    for params, mine in zip(requests, answers):
        assert "fault" not in mine
        assert mine == world.call(world.site.url, "summarize", params), params
