"""`read` through the real shotgun_api3 client: relation x field-type matrix, deep links,
null rules, sorting, paging, return fields and faults. Values are in tests/mock/world.py.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import shotgun_api3

from tests.support.procs import MockProcess

from . import world
from .world import H, O, T

ALL = {1, 2, 3, 4, 5}

MATRIX: list[tuple[str, str, Any, set[int]]] = [
    # text: case-insensitive, non-ASCII, null rules
    ("sg_text", "is", "alpha beta", {1}),
    ("sg_text", "is", None, {4, 5}),
    ("sg_text", "is_not", "ALPHA BETA", {2, 3, 4, 5}),
    ("sg_text", "is_not", None, {1, 2, 3}),
    ("sg_text", "in", ["école", "x"], {3}),
    ("sg_text", "in", ["école", None], {3, 4, 5}),
    ("sg_text", "not_in", ["ÉCOLE"], {1, 2, 4, 5}),
    ("sg_text", "contains", "ÉCOLE", {2, 3}),
    ("sg_text", "not_contains", "école", {1, 4, 5}),
    ("sg_text", "starts_with", "alp", {1}),
    ("sg_text", "starts_with", "éC", {3}),
    ("sg_text", "ends_with", "BETA", {1}),
    ("sg_text", "ends_with", "école", {2, 3}),
    # numbers: 0 is not null
    ("sg_number", "is", 0, {2}),
    ("sg_number", "is", None, {4, 5}),
    ("sg_number", "is_not", None, {1, 2, 3}),
    ("sg_number", "is_not", 10, {2, 3, 4, 5}),
    ("sg_number", "less_than", 0, {3}),
    ("sg_number", "greater_than", 0, {1}),
    ("sg_number", "between", [0, 10], {1, 2}),
    ("sg_number", "between", [None, 0], {2, 3}),
    ("sg_number", "not_between", [0, 10], {3}),
    ("sg_number", "in", [10, -5], {1, 3}),
    ("sg_number", "in", [None], {4, 5}),
    ("sg_number", "not_in", [10], {2, 3, 4, 5}),
    ("sg_float", "less_than", 0, {2}),
    ("sg_float", "between", [0.0, 1.5], {1, 3}),
    ("sg_float", "is", 0.0, {3}),
    ("sg_float", "greater_than", -2.5, {1, 2, 3}),
    ("sg_currency", "greater_than", 0, {1}),
    ("sg_currency", "between", [-1, 0], {2, 3}),
    ("sg_percent", "is", 100, {3}),
    ("sg_percent", "less_than", 50, {2}),
    ("sg_duration", "greater_than", 0, {1, 3}),
    ("sg_duration", "not_in", [0], {1, 3, 4, 5}),
    ("sg_timecode", "between", [1, 1000], {1, 3}),
    ("id", "is", 2, {2}),
    ("id", "in", [1, 3], {1, 3}),
    ("id", "greater_than", 3, {4, 5}),
    ("id", "not_in", [1, 2, 3], {4, 5}),
    # dates and datetimes
    ("sg_date", "is", "2024-01-10", {1}),
    ("sg_date", "is", None, {4, 5}),
    ("sg_date", "less_than", "2024-01-01", {3}),
    ("sg_date", "greater_than", "2024-01-10", {2}),
    ("sg_date", "between", ["2024-01-01", "2024-12-31"], {1, 2}),
    ("sg_date", "in", ["2023-12-31", "2024-02-20"], {2, 3}),
    ("sg_date", "not_between", ["2024-01-01", "2024-12-31"], {3}),
    ("sg_date_time", "greater_than", "2024-01-01T00:00:00Z", {1, 2}),
    ("sg_date_time", "between", ["2023-12-31T23:59:59Z", "2024-01-10T10:00:00Z"], {1, 3}),
    ("sg_date_time", "is", "2024-02-20T00:00:00Z", {2}),
    ("sg_date_time", "in_last", [1, "DAY"], set()),
    ("sg_date_time", "not_in_last", [1, "DAY"], {1, 2, 3}),
    ("sg_date", "in_next", [30, "DAY"], set()),
    ("sg_date", "in_calendar_year", [0], set()),
    ("created_at", "in_last", [1, "HOUR"], ALL),
    ("created_at", "not_in_last", [1, "HOUR"], set()),
    ("created_at", "in_calendar_day", [0], ALL),
    ("created_at", "in_calendar_day", [-1], set()),
    ("created_at", "in_calendar_week", [0], ALL),
    ("created_at", "in_calendar_month", [0], ALL),
    ("created_at", "in_calendar_year", [1], set()),
    # checkbox: null is False
    ("sg_checkbox", "is", True, {1}),
    ("sg_checkbox", "is", False, {2, 3, 4, 5}),
    ("sg_checkbox", "is_not", True, {2, 3, 4, 5}),
    # a checkbox is never empty: null matches no record, and every record is not null
    ("sg_checkbox", "is", None, set()),
    ("sg_checkbox", "is_not", None, {1, 2, 3, 4, 5}),
    # list-like
    ("sg_list", "is", "a", {1}),
    ("sg_list", "in", ["a", "c"], {1, 3}),
    ("sg_list", "not_in", ["a"], {2, 3, 4, 5}),
    ("sg_list", "is_not", "b", {1, 3, 4, 5}),
    ("sg_list", "is", None, {4, 5}),
    ("sg_status_list", "is", "ip", {1, 3}),
    ("sg_status_list", "not_in", ["ip"], {2, 4, 5}),
    ("sg_status_list", "in", ["fin", None], {2, 4, 5}),
    ("sg_entity_type", "is", "shot", {1, 3}),
    ("sg_entity_type", "in", ["Asset"], {2}),
    ("sg_entity_type", "is_not", "Shot", {2, 4, 5}),
    ("sg_color", "is", "255,0,0", {1}),
    ("sg_color", "is", None, {3, 4, 5}),
    ("sg_color", "in", ["0,0,255"], {2}),
    ("sg_uuid", "is", "abc-1", {1}),
    ("sg_uuid", "in", ["DEF-2"], {2}),
    ("sg_uuid", "not_in", ["abc-1"], {2, 3, 4, 5}),
    ("sg_footage", "is", "10-00", {1}),
    ("sg_footage", "is", None, {3, 4, 5}),
    ("image", "is", None, {2, 3, 4, 5}),
    ("image", "is_not", None, {1}),
    # tag_list: `is` means contains
    ("tag_list", "is", "red", {1, 2}),
    ("tag_list", "is", "BLUE", {1}),
    ("tag_list", "is", None, {3, 4, 5}),
    ("tag_list", "is_not", "red", {3, 4, 5}),
    ("tag_list", "name_contains", "lu", {1}),
    ("tag_list", "name_not_contains", "red", {3, 4, 5}),
    ("tag_list", "name_is", "Blue", {1}),
    # single entity; Thing 5 links to a retired Other, which counts as null
    ("sg_link", "is", O(1), {1}),
    ("sg_link", "is", O(3), set()),
    ("sg_link", "is", None, {4, 5}),
    ("sg_link", "is_not", O(1), {2, 3, 4, 5}),
    ("sg_link", "is_not", None, {1, 2, 3}),
    ("sg_link", "in", [O(1), O(2)], {1, 2}),
    ("sg_link", "in", [O(1), None], {1, 4, 5}),
    ("sg_link", "not_in", [O(1)], {2, 3, 4, 5}),
    ("sg_link", "type_is", "Thing", {3}),
    ("sg_link", "type_is", "Other", {1, 2}),
    ("sg_link", "type_is_not", "Other", {3, 4, 5}),
    ("sg_link", "name_contains", "oak", {1}),
    ("sg_link", "name_not_contains", "oak", {2, 3, 4, 5}),
    ("sg_link", "name_starts_with", "pi", {2}),
    ("sg_link", "name_ends_with", "K", {1}),
    ("sg_link", "name_is", "T1", {3}),
    # multi entity: `is` means contains, null means empty
    ("sg_links", "is", O(2), {1, 2}),
    ("sg_links", "is", None, {4, 5}),
    ("sg_links", "is_not", O(2), {3, 4, 5}),
    ("sg_links", "is_not", None, {1, 2, 3}),
    ("sg_links", "in", [O(1), T(2)], {1, 3}),
    ("sg_links", "not_in", [O(2)], {3, 4, 5}),
    ("sg_links", "type_is", "Thing", {3}),
    ("sg_links", "type_is_not", "Other", {3, 4, 5}),
    ("sg_links", "name_contains", "PINE", {1, 2}),
    ("sg_links", "name_not_contains", "oak", {2, 3, 4, 5}),
    ("sg_links", "name_starts_with", "T", {3}),
    ("sg_links", "name_ends_with", "NE", {1, 2}),
    # addressing
    ("sg_addressing", "is", H(2), {2}),
    ("sg_addressing", "in", [H(2)], {2}),
    ("sg_addressing", "contains", "zoë", {1, 2}),
    ("sg_addressing", "not_contains", "ann", {1, 3, 4, 5}),
    ("sg_addressing", "name_contains", "MÜLL", {1, 2}),
    ("sg_addressing", "type_is", "HumanUser", {1, 2}),
    ("sg_addressing", "is", None, {3, 4, 5}),
    # deep paths: any-match, empty or other-type links never match
    ("sg_link.Other.code", "is", "oak", {1}),
    ("sg_link.Thing.code", "is", "t1", {3}),
    ("sg_link.Other.code", "is_not", "oak", {2}),
    ("sg_links.Other.code", "starts_with", "p", {1, 2}),
    ("sg_links.Thing.sg_number", "is", 0, {3}),
    ("project.Project.archived", "is", True, {3}),
    ("project.Project.name", "is", "LIVE", {1, 2, 5}),
    ("sg_link.Thing.sg_link.Other.code", "is", "oak", {3}),
    ("sg_link.Thing.sg_links", "is", O(2), {3}),
]


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


@pytest.fixture(scope="module")
def sg(world_site: MockProcess) -> Any:
    return world_site.sg()


@pytest.mark.parametrize("path,relation,values,expected", MATRIX,
                         ids=[f"{p}-{r}-{json.dumps(v, ensure_ascii=True)}" for p, r, v, _ in MATRIX])
def test_relation_matrix(sg: Any, path: str, relation: str, values: Any, expected: set[int]) -> None:
    if not isinstance(values, list):
        values = [values]
    filters = {"logical_operator": "and", "conditions": [{"path": path, "relation": relation, "values": values}]}
    assert set(_ids(sg.find("Thing", filters))) == expected


def test_every_relation_of_the_registry_is_exercised() -> None:
    from sgcache.mock.filters import RELATIONS
    seen = {(p.split(".")[-1], r) for p, r, _, _ in MATRIX}
    types = {f: fs.data_type for f, fs in world.build_schema()["Thing"].fields.items()}
    covered = {(types.get(f, "text"), r) for f, r in seen}
    for dt, rels in RELATIONS.items():
        if dt in ("text", "number", "entity", "multi_entity"):
            missing = {r for r in rels if (dt, r) not in covered}
            assert not missing, (dt, missing)


def test_nested_and_or_groups(sg: Any) -> None:
    rows = sg.find("Thing", [
        ["sg_number", "is", 10],
        {"filter_operator": "all", "filters": [["sg_status_list", "is", "fin"], ["sg_checkbox", "is", False]]},
    ], filter_operator="any")
    assert sorted(_ids(rows)) == [1, 2]
    rows = sg.find("Thing", {"logical_operator": "and", "conditions": [
        {"logical_operator": "or", "conditions": [
            {"path": "sg_number", "relation": "is", "values": [10]},
            {"path": "sg_number", "relation": "is", "values": [-5]}]},
        {"path": "sg_status_list", "relation": "is", "values": ["IP"]}]})
    assert sorted(_ids(rows)) == [1, 3]


def test_links_are_exactly_type_id_name(sg: Any) -> None:
    row = sg.find_one("Thing", [["id", "is", 1]], ["sg_link", "sg_links", "project", "sg_addressing"])
    assert row["sg_link"] == {"type": "Other", "id": 1, "name": "Oak"}
    assert row["sg_links"] == [{"type": "Other", "id": 1, "name": "Oak"}, {"type": "Other", "id": 2, "name": "Pine"}]
    assert row["project"] == {"type": "Project", "id": 1, "name": "Live"}
    assert row["sg_addressing"] == [{"type": "HumanUser", "id": 1, "name": "Zoë Müller"}]


def test_links_to_retired_entities_read_as_absent(sg: Any) -> None:
    row = sg.find_one("Thing", [["id", "is", 5]], ["sg_link", "sg_links"])
    assert row["sg_link"] is None and row["sg_links"] == []


def test_return_fields_values(sg: Any) -> None:
    row = sg.find_one("Thing", [["id", "is", 1]], ["sg_secret", "step_0", "sg_url", "sg_meta", "tag_list",
                                                   "image", "sg_date", "sg_float", "sg_checkbox"])
    assert row["sg_secret"] == "*******"
    assert row["step_0"] is None
    assert row["sg_url"]["url"] == "https://example.com/a" and row["sg_url"]["name"] == "A"
    assert row["sg_meta"] == {"k": 1}
    assert row["tag_list"] == ["Red", "blue"]
    assert row["image"].startswith("http://127.0.0.1:") and "/thumbnail/" in row["image"]
    assert row["sg_date"] == "2024-01-10" and row["sg_float"] == 1.5 and row["sg_checkbox"] is True
    empty = sg.find_one("Thing", [["id", "is", 4]], ["sg_links", "tag_list", "sg_text", "sg_checkbox"])
    assert empty == {"type": "Thing", "id": 4, "sg_links": [], "tag_list": [], "sg_text": None,
                     "sg_checkbox": False}


def test_deep_return_fields(sg: Any) -> None:
    rows = sg.find("Thing", [], ["sg_link.Other.code", "sg_link.Thing.sg_number", "sg_links.Other.code",
                                 "project.Project.name", "sg_link.Thing.sg_link.Other.code"])
    by_id = {r["id"]: r for r in rows}
    assert by_id[1]["sg_link.Other.code"] == "Oak" and by_id[1]["sg_link.Thing.sg_number"] is None
    assert by_id[3]["sg_link.Other.code"] is None and by_id[3]["sg_link.Thing.sg_number"] == 10
    assert by_id[3]["sg_link.Thing.sg_link.Other.code"] == "Oak"
    assert by_id[5]["sg_link.Other.code"] is None  # retired target
    assert all(r["sg_links.Other.code"] is None for r in rows)  # multi-entity hops are not followed
    assert by_id[3]["project.Project.name"] == "Archive" and by_id[4]["project.Project.name"] is None


@pytest.mark.parametrize("order,expected", [
    ([{"field_name": "sg_number", "direction": "asc"}], [4, 5, 3, 2, 1]),
    ([{"field_name": "sg_number", "direction": "desc"}], [1, 2, 3, 4, 5]),
    ([{"field_name": "sg_text", "direction": "asc"}], [4, 5, 1, 2, 3]),
    ([{"field_name": "sg_text", "direction": "desc"}], [3, 2, 1, 4, 5]),
    ([{"field_name": "sg_checkbox", "direction": "desc"}, {"field_name": "sg_number", "direction": "asc"}],
     [1, 4, 5, 3, 2]),
    ([{"field_name": "sg_status_list", "direction": "asc"}, {"field_name": "id", "direction": "desc"}],
     [5, 4, 2, 3, 1]),
    ([{"field_name": "sg_link.Other.code", "direction": "asc"}], [3, 4, 5, 1, 2]),
    ([{"field_name": "sg_link", "direction": "asc"}], [4, 5, 1, 2, 3]),
    ([{"field_name": "sg_date", "direction": "desc"}], [2, 1, 3, 4, 5]),
    (None, [1, 2, 3, 4, 5]),
])
def test_sorting(sg: Any, order: Any, expected: list[int]) -> None:
    assert _ids(sg.find("Thing", [], order=order)) == expected


def test_limit_and_page(sg: Any) -> None:
    assert _ids(sg.find("Thing", [], limit=2)) == [1, 2]
    assert _ids(sg.find("Thing", [], limit=2, page=2)) == [3, 4]
    assert _ids(sg.find("Thing", [], limit=2, page=3)) == [5]
    assert _ids(sg.find("Thing", [], limit=2, page=4)) == []
    assert sg.find_one("Thing", [["sg_number", "less_than", 100]], order=[{"field_name": "sg_number",
                                                                          "direction": "desc"}])["id"] == 1


def _rpc(mock: MockProcess, method: str, params: Any, raw: bytes | None = None) -> Any:
    auth = {"script_name": mock.script_name, "script_key": mock.script_key}
    body = raw if raw is not None else json.dumps({"method_name": method, "params": [auth, params]}).encode()
    req = urllib.request.Request(mock.url + "/api3/json", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("application/json")
        return json.loads(r.read())


def test_only_the_server_filter_format_is_taken(world_site: MockProcess) -> None:
    # the client turns [path, relation, value] into {"path", "relation", "values"} itself
    # (protocol.md §4.2); a raw caller sending the list form gets a Fault, not a guess
    base = {"type": "Thing", "return_fields": ["id"]}
    listed = _rpc(world_site, "read", {**base, "filters": {"logical_operator": "and",
                                                           "conditions": [["sg_number", "is", 10]]}})
    assert listed["exception"] is True and "malformed condition" in listed["message"]
    server = _rpc(world_site, "read", {**base, "filters": {"logical_operator": "and", "conditions": [
        {"path": "sg_number", "relation": "is", "values": [10]}]}})
    assert [e["id"] for e in server["results"]["entities"]] == [1]


def test_both_paging_protocols(world_site: MockProcess) -> None:
    base = {"type": "Thing", "return_fields": ["id"], "filters": {"logical_operator": "and", "conditions": []}}
    r = _rpc(world_site, "read", {**base, "paging": {"entities_per_page": 2, "current_page": 2},
                                  "return_paging_info_without_counts": True})["results"]
    assert [e["id"] for e in r["entities"]] == [3, 4] and r["paging_info"]["has_next_page"] is True
    r = _rpc(world_site, "read", {**base, "paging": {"entities_per_page": 2, "current_page": 3},
                                  "return_paging_info": True})["results"]
    assert [e["id"] for e in r["entities"]] == [5]
    assert r["paging_info"]["entity_count"] == 5 and r["paging_info"]["has_next_page"] is False
    r = _rpc(world_site, "read", {**base, "paging": {"entities_per_page": 2, "current_page": 9},
                                  "return_paging_info_without_counts": True})["results"]
    assert r["entities"] == [] and r["paging_info"]["has_next_page"] is False


def test_return_only_and_archived_projects(sg: Any) -> None:
    assert _ids(sg.find("Other", [], retired_only=True)) == [3]
    assert _ids(sg.find("Other", [])) == [1, 2]
    assert 3 not in _ids(sg.find("Thing", [], include_archived_projects=False))
    assert 4 in _ids(sg.find("Thing", [], include_archived_projects=False))  # no project: kept
    assert _ids(sg.find("Project", [], include_archived_projects=False)) == [1, 2]


@pytest.mark.parametrize("filters,fields", [
    ([["sg_secret", "is", "x"]], None),
    ([["sg_meta", "is", None]], None),
    ([["sg_url", "is", None]], None),
    ([["step_0", "is", None]], None),
    ([["sg_text", "less_than", "x"]], None),
    ([["sg_number", "contains", "1"]], None),
    ([["sg_checkbox", "in", [True]]], None),
    ([["image", "is", "http://x"]], None),
    ([["sg_number", "is", "ten"]], None),
    ([["sg_date", "is", "2024/01/01"]], None),
    ([["sg_text", "frobnicates", "x"]], None),
    ([["nope", "is", 1]], None),
    ([["sg_text.Other.code", "is", 1]], None),
    ([["sg_link.Nope.code", "is", 1]], None),
    ([["sg_number", "between", 1]], None),
    # name_is is documented for entity fields only (protocol.md §5.1)
    ([["sg_links", "name_is", "t2"]], None),
    ([["created_at", "in_last", 1, "FORTNIGHT"]], None),
    ([], ["no_such_field"]),
])
def test_invalid_queries_fault(sg: Any, filters: Any, fields: Any) -> None:
    with pytest.raises(shotgun_api3.Fault) as e:
        sg.find("Thing", filters, fields)
    assert not isinstance(e.value, shotgun_api3.AuthenticationFault)


def test_unknown_entity_type_faults(sg: Any) -> None:
    with pytest.raises(shotgun_api3.Fault, match="does not exist"):
        sg.find("NoSuchType", [])


def test_envelope_never_500(world_site: MockProcess) -> None:
    assert _rpc(world_site, "", None, raw=b"{not json")["exception"] is True
    assert _rpc(world_site, "", None, raw=b"[1,2]")["exception"] is True
    r = _rpc(world_site, "frobnicate", {})
    assert r["exception"] is True and "frobnicate" in r["message"]
    r = _rpc(world_site, "read", {"type": "Thing", "paging": {"entities_per_page": "x"}})
    assert r["exception"] is True and r["error_code"] != 102
    r = _rpc(world_site, "read", "not a dict")
    assert r["exception"] is True
    r = _rpc(world_site, "", None, raw=json.dumps({"method_name": "read", "params": [{}]}).encode())
    assert r["exception"] is True and r["error_code"] == 102


def test_info_needs_no_auth(world_site: MockProcess) -> None:
    r = _rpc(world_site, "", None, raw=json.dumps({"method_name": "info", "params": []}).encode())
    assert r["version"][:2] == [8, 50] and r["api_max_entities_per_page"] == 500
    assert r["s3_direct_uploads_enabled"] is False


def test_summarize(sg: Any) -> None:
    r = sg.summarize("Thing", [], [{"field": "sg_number", "type": "sum"}, {"field": "id", "type": "count"},
                                   {"field": "sg_number", "type": "maximum"},
                                   {"field": "sg_number", "type": "minimum"},
                                   {"field": "sg_number", "type": "average"},
                                   {"field": "sg_date", "type": "earliest"}, {"field": "sg_date", "type": "latest"},
                                   {"field": "sg_checkbox", "type": "checked"},
                                   {"field": "sg_text", "type": "record_count"}])
    s = r["summaries"]
    assert s["id"] == 5 and s["sg_date"] == "2024-02-20" and s["sg_checkbox"] == 1 and s["sg_text"] == 5
    # One summary per call: the world's sg_number values are 10, 0, -5 and two nulls.
    for field, kind, want in [("sg_number", "sum", 5), ("sg_number", "maximum", 10), ("sg_number", "minimum", -5),
                              ("sg_number", "average", 5 / 3), ("sg_date", "earliest", "2023-12-31"),
                              ("sg_date", "latest", "2024-02-20"), ("sg_checkbox", "unchecked", 4)]:
        assert sg.summarize("Thing", [], [{"field": field, "type": kind}])["summaries"][field] == want, (field, kind)
    assert r["groups"] == []
    r = sg.summarize("Thing", [["sg_number", "is_not", None]], [{"field": "sg_number", "type": "sum"}])
    assert r["summaries"]["sg_number"] == 5
    r = sg.summarize("Thing", [["id", "greater_than", 100]], [{"field": "id", "type": "count"}])
    assert r["summaries"]["id"] == 0


def test_summarize_groupings(sg: Any) -> None:
    r = sg.summarize("Thing", [], [{"field": "id", "type": "count"}],
                     grouping=[{"field": "sg_list", "type": "exact", "direction": "asc"}])
    assert [(g["group_name"], g["summaries"]["id"]) for g in r["groups"]] == [("", 2), ("a", 1), ("b", 1), ("c", 1)]
    r = sg.summarize("Thing", [["sg_link", "is_not", None]], [{"field": "id", "type": "count"}],
                     grouping=[{"field": "sg_link", "type": "entitytype", "direction": "desc"},
                               {"field": "sg_link", "type": "exact", "direction": "asc"}])
    assert [g["group_value"] for g in r["groups"]] == ["Thing", "Other"]
    inner = r["groups"][1]["groups"]
    assert [g["group_value"] for g in inner] == [{"type": "Other", "id": 1, "name": "Oak", "valid": "valid"},
                                                {"type": "Other", "id": 2, "name": "Pine", "valid": "valid"}]
    # link groups come in id order, not name order: Zoë Müller (1) before Ann (2), as the
    # client's own summarize example lists Steps Client (1), Online (2), ..., Comp (8)
    r = sg.summarize("Thing", [["sg_addressing", "is_not", None]], [{"field": "id", "type": "count"}],
                     grouping=[{"field": "sg_addressing", "type": "exact", "direction": "asc"}])
    assert [(g["group_name"], g["summaries"]["id"]) for g in r["groups"]] == [("Zoë Müller", 2), ("Ann", 1)]
    r = sg.summarize("Thing", [["sg_number", "is_not", None]], [{"field": "id", "type": "count"}],
                     grouping=[{"field": "sg_number", "type": "tens", "direction": "asc"}])
    assert [g["group_value"] for g in r["groups"]] == [-10, 0, 10]
    r = sg.summarize("Thing", [["sg_date", "is_not", None]], [{"field": "id", "type": "count"}],
                     grouping=[{"field": "sg_date", "type": "month", "direction": "asc"}])
    assert [g["group_name"] for g in r["groups"]] == ["2023-12", "2024-01", "2024-02"]
    r = sg.summarize("Thing", [["sg_date", "is_not", None]], [{"field": "id", "type": "count"}],
                     grouping=[{"field": "sg_date", "type": "quarter", "direction": "asc"}])
    assert [g["group_name"] for g in r["groups"]] == ["2023 Q4", "2024 Q1"]
    with pytest.raises(shotgun_api3.Fault):
        sg.summarize("Thing", [], [{"field": "id", "type": "median"}])


def test_text_search(sg: Any) -> None:
    r = sg.text_search("oak", {"Other": [], "Thing": []})
    assert r["terms"] == ["oak"]
    assert [(m["type"], m["id"]) for m in r["matches"]] == [("Other", 1)]  # Oakley is retired
    with pytest.raises(shotgun_api3.Fault):
        sg.text_search("t1", {"Thing": []})  # fewer than 3 characters
    assert sg.text_search("Oak Pine", {"Other": []})["matches"] == []
    assert [m["id"] for m in sg.text_search("PIN", {"Other": [["id", "is", 2]]})["matches"]] == [2]
    assert sg.text_search("pin", {"Other": [["id", "is", 1]]})["matches"] == []
    assert sg.text_search("live", {"Project": []}, project_ids=[2])["matches"] == []


def test_summary_types_on_statuses_and_checkboxes(sg: Any) -> None:
    r = sg.summarize("Thing", [], [{"field": "sg_checkbox", "type": "unchecked"},
                                   {"field": "sg_status_list", "type": "status_list"},
                                   {"field": "sg_number", "type": "average"}])
    s = r["summaries"]
    assert s["sg_checkbox"] == 4 and s["sg_status_list"] == {"ip": 1, "fin": 1, "IP": 1}
    assert s["sg_number"] == pytest.approx(5 / 3)
    r = sg._call_rpc("summarize", {"type": "Thing", "filters": {"logical_operator": "and", "conditions": []},
                                   "summaries": [{"field": "sg_status_list", "type": "status_percentage",
                                                  "value": "fin"},
                                                 {"field": "sg_checkbox", "type": "percentage"}]})
    assert r["summaries"] == {"sg_status_list": 20, "sg_checkbox": 20}
    r = sg.summarize("Thing", [], [{"field": "id", "type": "count"}], include_archived_projects=False)
    assert r["summaries"]["id"] == 4


def test_rpc_under_a_base_path(world_site: MockProcess) -> None:
    sg = shotgun_api3.Shotgun(world_site.url + "/sg/", script_name=world_site.script_name,
                              api_key=world_site.script_key)
    assert sg.find_one("Thing", [["id", "is", 2]], ["code"])["code"] == "t2"
