"""The read engine on both stores: exact answers for what it serves, Passthrough otherwise.

The demo site is loaded straight into the store; expected answers are computed from
the same records in plain Python, so each test states one behaviour a caller relies on.
"""

from __future__ import annotations

from typing import Any

import pytest

from sgcache.read.engine import Passthrough, ReadEngine
from sgcache.store.tables import Store


def F(*conds: Any, op: str = "and") -> dict[str, Any]:
    out = []
    for c in conds:
        out.append(c if isinstance(c, dict) else {"path": c[0], "relation": c[1], "values": list(c[2:])})
    return {"logical_operator": op, "conditions": out}


def read(reader: ReadEngine, store: Store, etype: str, filters: dict[str, Any] | None = None,
         fields: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    params = {"type": etype, "filters": filters or F(), "return_fields": fields or ["id"],
              "return_only": "active", "paging": {"entities_per_page": 500, "current_page": 1},
              "return_paging_info_without_counts": True, **kw}
    with store.engine.connect() as conn:
        return reader.read(conn, params)


def active(records: list[tuple[str, dict[str, Any]]], etype: str) -> list[dict[str, Any]]:
    return [r for t, r in records if t == etype and not r.get("__retired")]


def ids(res: dict[str, Any]) -> list[int]:
    return [e["id"] for e in res["entities"]]


def test_text_is_matches_case_insensitively_including_non_ascii(reader, loaded_store, demo_records):
    target = next(r for r in active(demo_records, "HumanUser") if any(ord(ch) > 127 for ch in r["name"]))
    res = read(reader, loaded_store, "HumanUser", F(("name", "is", target["name"].upper())), ["name"])
    assert target["id"] in ids(res)
    assert all(e["name"].lower() == target["name"].lower() for e in res["entities"])


def test_contains_escapes_like_wildcards(reader, loaded_store):
    res = read(reader, loaded_store, "Shot", F(("code", "contains", "%")))
    assert res["entities"] == []


def test_no_filter_returns_active_rows_in_id_order(reader, loaded_store, demo_records):
    res = read(reader, loaded_store, "Shot")
    assert ids(res) == sorted(r["id"] for r in active(demo_records, "Shot"))


def test_return_only_retired(reader, loaded_store, demo_records):
    expected = sorted(r["id"] for t, r in demo_records if t == "Task" and r.get("__retired"))
    assert expected, "the demo site should hold some retired tasks"
    assert ids(read(reader, loaded_store, "Task", return_only="retired")) == expected


def test_links_come_back_as_type_id_name(reader, loaded_store, demo_records):
    seqs = {r["id"]: r["code"] for r in active(demo_records, "Sequence")}
    res = read(reader, loaded_store, "Shot", F(("sg_sequence", "is_not", None)), ["sg_sequence"])
    assert res["entities"]
    for e in res["entities"]:
        link = e["sg_sequence"]
        assert set(link) == {"type", "id", "name"} and link["name"] == seqs[link["id"]]


def test_two_paths_through_the_same_type_stay_apart(reader, loaded_store, demo_records):
    users = {r["id"]: r["name"] for r in active(demo_records, "HumanUser")}
    shots = {r["id"]: r for r in active(demo_records, "Shot")}
    res = read(reader, loaded_store, "Shot", None,
               ["created_by.HumanUser.name", "updated_by.HumanUser.name"])
    differing = 0
    for e in res["entities"]:
        src = shots[e["id"]]
        for f in ("created_by", "updated_by"):
            link = src[f]
            want = users.get(link["id"]) if link and link["type"] == "HumanUser" else None
            assert e[f"{f}.HumanUser.name"] == want
        differing += e["created_by.HumanUser.name"] != e["updated_by.HumanUser.name"]
    assert differing, "demo data should have shots updated by someone other than their creator"


def test_deep_filter_through_multi_entity_is_any_match(reader, loaded_store, demo_records):
    assets = {r["id"]: r for r in active(demo_records, "Asset")}
    code = next(iter(assets.values()))["code"]
    want = sorted(r["id"] for r in active(demo_records, "Shot")
                  if any(l["id"] in assets and assets[l["id"]]["code"].lower() == code.lower()
                         for l in r["assets"]))
    res = read(reader, loaded_store, "Shot", F(("assets.Asset.code", "is", code)))
    assert ids(res) == want


def test_multi_entity_values_hide_retired_children_and_keep_order(reader, loaded_store, demo_records):
    retired_tasks = {r["id"] for t, r in demo_records if t == "Task" and r.get("__retired")}
    shots = {r["id"]: r for r in active(demo_records, "Shot")}
    res = read(reader, loaded_store, "Shot", None, ["tasks"])
    for e in res["entities"]:
        want = [l["id"] for l in shots[e["id"]]["tasks"] if l["id"] not in retired_tasks]
        assert [l["id"] for l in e["tasks"]] == want


def test_paging_info_is_exact_for_both_protocols(reader, loaded_store, demo_records):
    n = len(active(demo_records, "Task"))
    per = 7
    last_page = (n + per - 1) // per
    res = read(reader, loaded_store, "Task", paging={"entities_per_page": per, "current_page": last_page})
    assert res["paging_info"] == {"has_next_page": False}
    res = read(reader, loaded_store, "Task", paging={"entities_per_page": per, "current_page": last_page - 1})
    assert res["paging_info"] == {"has_next_page": True}
    res = read(reader, loaded_store, "Task", paging={"entities_per_page": per, "current_page": 1},
               return_paging_info_without_counts=False, return_paging_info=True)
    assert res["paging_info"]["entity_count"] == n


def test_sort_desc_with_nulls_last_then_id(reader, loaded_store, demo_records):
    shots = active(demo_records, "Shot")
    res = read(reader, loaded_store, "Shot", None, ["sg_cut_in"],
               sorts=[{"field_name": "sg_cut_in", "direction": "desc"}])
    with_val = sorted((r for r in shots if r["sg_cut_in"] is not None), key=lambda r: (-r["sg_cut_in"], r["id"]))
    nulls = sorted(r["id"] for r in shots if r["sg_cut_in"] is None)
    assert ids(res) == [r["id"] for r in with_val] + nulls


@pytest.mark.parametrize("params, reason", [
    ({"type": "Shot", "return_fields": ["image"]}, "uncached field"),
    ({"type": "Shot", "filters": F(("created_at", "in_last", 1, "DAY"))}, "time-relative"),
    ({"type": "Shot", "filters": F(("no_such_field", "is", 1))}, "site decides"),
    ({"type": "NoSuchType"}, "uncached entity type"),
    ({"type": "Shot", "additional_filter_presets": [{"preset_name": "LATEST"}]}, "unsupported read params"),
])
def test_what_it_cannot_answer_exactly_is_passed_through(reader, loaded_store, params, reason):
    with loaded_store.engine.connect() as conn, pytest.raises(Passthrough) as exc:
        reader.read(conn, params)
    assert reason in exc.value.reason


# -- plans kept across requests, and the one-row by-id path ---------------------------------

def _all_fields(store: Store, etype: str) -> list[str]:
    return sorted(store[etype].fields)


@pytest.mark.parametrize("etype", ["Shot", "Task", "Version", "HumanUser", "Project"])
@pytest.mark.parametrize("return_only", ["active", "retired"])
def test_by_id_answers_exactly_like_the_general_path(reader, loaded_store, demo_records, etype, return_only):
    """`id is N` takes its own compiled path; it must agree with `id in [N]` (the general
    path, itself checked against the mock) on every field, for live and retired rows."""
    if etype not in loaded_store:
        pytest.skip(f"{etype} not in the built-in schema")
    fields = _all_fields(loaded_store, etype)
    rows = [r for t, r in demo_records if t == etype]
    sample = rows[:: max(1, len(rows) // 12)] + [{"id": 10 ** 9}]  # and one that does not exist
    for rec in sample:
        for archived in (True, False):
            kw: dict[str, Any] = {"return_only": return_only}
            if not archived and etype != "Project":
                kw["include_archived_projects"] = False
            fast = read(reader, loaded_store, etype, F(("id", "is", rec["id"])), fields, **kw)
            slow = read(reader, loaded_store, etype, F(("id", "in", rec["id"])), fields, **kw)
            assert fast == slow
            exists = rec["id"] != 10 ** 9
            if exists and (return_only == "retired") == bool(rec.get("__retired")) and archived:
                assert ids(fast) == [rec["id"]]


def test_a_kept_plan_never_carries_one_requests_values_into_the_next(reader, loaded_store, demo_records):
    seqs = active(demo_records, "Sequence")[:3]
    shots = active(demo_records, "Shot")
    fields = ["code", "sg_sequence", "sg_sequence.Sequence.code"]
    order = [{"field_name": "code", "direction": "desc"}]
    for seq in seqs + seqs:  # the second round reuses the plans of the first
        res = read(reader, loaded_store, "Shot", F(("sg_sequence.Sequence.code", "is", seq["code"])), fields,
                   sorts=order)
        expected = [s for s in shots if (s.get("sg_sequence") or {}).get("id") == seq["id"]]
        assert ids(res) == [s["id"] for s in sorted(expected, key=lambda s: (s["code"].casefold(), -s["id"]),
                                                   reverse=True)]
        assert all(e["sg_sequence.Sequence.code"] == seq["code"] for e in res["entities"])
    for shot in shots[:5]:
        res = read(reader, loaded_store, "Shot", F(("id", "is", shot["id"])), fields, sorts=order)
        assert [e["code"] for e in res["entities"]] == [shot["code"]]


def test_only_one_row_reads_over_a_built_plan_count_as_point_reads(reader, loaded_store, demo_records):
    shot = active(demo_records, "Shot")[0]

    def params(filters: dict[str, Any], fields: list[str], **kw: Any) -> dict[str, Any]:
        return {"type": "Shot", "filters": filters, "return_fields": fields, "return_only": "active",
                "paging": {"entities_per_page": 500, "current_page": 1}, **kw}

    by_id = params(F(("id", "is", shot["id"])), ["code", "sg_sequence"])
    assert not reader.is_point_read(by_id)  # no plan yet: planning is a worker thread's job
    read(reader, loaded_store, "Shot", by_id["filters"], by_id["return_fields"])
    assert reader.is_point_read(by_id)
    assert not reader.is_point_read({**by_id, "filters": F(("id", "is", str(shot["id"])))})
    assert not reader.is_point_read({**by_id, "filters": F(("id", "in", shot["id"]))})
    assert not reader.is_point_read({**by_id, "paging": {"entities_per_page": 500, "current_page": 2}})
    assert not reader.is_point_read({**by_id, "return_paging_info": True})
    assert not reader.is_point_read({**by_id, "return_only": "retired"})  # that variant not built yet
    other = active(demo_records, "Shot")[1]["id"]
    group_too = F({**by_id["filters"]["conditions"][0], "conditions": [{"path": "id", "relation": "is",
                                                                       "values": [other]}]})
    assert not reader.is_point_read({**by_id, "filters": group_too})  # a group, whatever else it holds
    assert ids(read(reader, loaded_store, "Shot", group_too)) == [other]
    with_multi = params(F(("id", "is", shot["id"])), ["code", "assets"])
    read(reader, loaded_store, "Shot", with_multi["filters"], with_multi["return_fields"])
    assert not reader.is_point_read(with_multi)  # a multi-entity field is a second, unbounded query
