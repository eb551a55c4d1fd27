"""Writes through the real client and the EventLogEntry rows they leave (event-log.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import shotgun_api3

from tests.support.procs import MockProcess


@pytest.fixture(scope="module")
def sg(studio_site: MockProcess) -> Any:
    sg = studio_site.sg()
    sg.set_session_uuid("uuid-writes-1")
    return sg


def last_event_id(sg: Any) -> int:
    row = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
    return row["id"] if row else 0


def events_after(sg: Any, after: int) -> list[dict[str, Any]]:
    return sg.find("EventLogEntry", [["id", "greater_than", after]],
                   ["event_type", "attribute_name", "entity", "project", "user", "meta", "session_uuid",
                    "created_at"], order=[{"field_name": "id", "direction": "asc"}])


@pytest.fixture
def shot(sg: Any) -> dict[str, Any]:
    return sg.create("Shot", {"code": "evt_shot", "project": {"type": "Project", "id": 1},
                              "sg_status_list": "ip"})


def test_create_returns_written_and_requested_fields(sg: Any) -> None:
    r = sg.create("Shot", {"code": "c1", "project": {"type": "Project", "id": 1, "name": "ignored", "foo": 1},
                           "description": "d"}, ["sg_status_list", "created_by"])
    assert r["type"] == "Shot" and isinstance(r["id"], int)
    assert r["code"] == "c1" and r["description"] == "d"
    assert r["project"]["type"] == "Project" and r["project"]["id"] == 1 and set(r["project"]) == {"type", "id", "name"}
    assert "sg_status_list" in r and r["created_by"]["type"] == "ApiUser"
    row = sg.find_one("Shot", [["id", "is", r["id"]]], ["created_at", "updated_at", "created_by", "updated_by"])
    assert abs(row["created_at"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    assert row["updated_by"] == row["created_by"]


def test_update_echoes_exactly_the_fields(sg: Any, shot: dict[str, Any]) -> None:
    r = sg.update("Shot", shot["id"], {"code": "renamed", "image": None})
    assert r == {"type": "Shot", "id": shot["id"], "code": "renamed", "image": None}


def test_multi_entity_update_modes(sg: Any, shot: dict[str, Any]) -> None:
    a1, a2, a3 = ({"type": "Asset", "id": i} for i in (1, 2, 3))
    sg.update("Shot", shot["id"], {"assets": [a1, a2]})
    sg.update("Shot", shot["id"], {"assets": [a2, a3]}, multi_entity_update_modes={"assets": "add"})
    assert [a["id"] for a in sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets"])["assets"]] == [1, 2, 3]
    sg.update("Shot", shot["id"], {"assets": [a1, a3]}, multi_entity_update_modes={"assets": "remove"})
    assert [a["id"] for a in sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets"])["assets"]] == [2]
    sg.update("Shot", shot["id"], {"assets": [a3]}, multi_entity_update_modes={"assets": "set"})
    assert [a["id"] for a in sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets"])["assets"]] == [3]


def test_delete_and_revive_results(sg: Any, shot: dict[str, Any]) -> None:
    assert sg.delete("Shot", shot["id"]) is True
    assert sg.delete("Shot", shot["id"]) is False
    assert sg.find("Shot", [["id", "is", shot["id"]]]) == []
    assert sg.revive("Shot", shot["id"]) is True
    assert sg.revive("Shot", shot["id"]) is False
    with pytest.raises(shotgun_api3.Fault):
        sg.delete("Shot", 987654)


def test_invalid_writes_fault(sg: Any) -> None:
    for data in ({"nope": 1}, {"sg_cut_in": "ten"}, {"project": {"type": "Project", "id": 999}},
                 {"sg_sequence": {"type": "Asset", "id": 1}}, {"code": 5}, {"step_0": 1}):
        with pytest.raises(shotgun_api3.Fault):
            sg.create("Shot", data)
    with pytest.raises(shotgun_api3.Fault):
        sg.update("Shot", 987654, {"code": "x"})


def test_new_event_then_in_create_changes(sg: Any) -> None:
    start = last_event_id(sg)
    s = sg.create("Shot", {"code": "new_evt", "project": {"type": "Project", "id": 1}})
    evs = events_after(sg, start)
    assert evs[0]["event_type"] == "Shotgun_Shot_New"
    assert evs[0]["meta"] == {"type": "new_entity", "entity_type": "Shot", "entity_id": s["id"]}
    assert evs[0]["entity"] == {"type": "Shot", "id": s["id"], "name": "new_evt"}
    assert evs[0]["project"]["id"] == 1
    changes = [e for e in evs[1:] if e["event_type"] == "Shotgun_Shot_Change"]
    by_attr = {e["attribute_name"]: e["meta"] for e in changes}
    assert by_attr["code"] == {"type": "attribute_change", "attribute_name": "code", "entity_type": "Shot",
                               "entity_id": s["id"], "field_data_type": "text", "old_value": None,
                               "new_value": "new_evt", "in_create": True}
    assert by_attr["project"]["new_value"]["id"] == 1 and by_attr["project"]["in_create"] is True
    for e in evs:
        assert e["user"]["type"] == "ApiUser" and e["session_uuid"] == "uuid-writes-1"


def test_change_event_old_and_new(sg: Any, shot: dict[str, Any]) -> None:
    start = last_event_id(sg)
    sg.update("Shot", shot["id"], {"sg_status_list": "fin"})
    (ev,) = events_after(sg, start)
    assert ev["event_type"] == "Shotgun_Shot_Change" and ev["attribute_name"] == "sg_status_list"
    assert ev["meta"]["old_value"] == "ip" and ev["meta"]["new_value"] == "fin"
    assert "in_create" not in ev["meta"]


def test_multi_entity_change_has_added_removed(sg: Any, shot: dict[str, Any]) -> None:
    sg.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": 1}]})
    start = last_event_id(sg)
    sg.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": 2}]})
    evs = events_after(sg, start)
    main = [e for e in evs if e["entity"]["type"] == "Shot"][0]
    assert main["meta"]["added"][0]["id"] == 2 and main["meta"]["removed"][0]["id"] == 1
    assert "old_value" not in main["meta"] and "new_value" not in main["meta"]
    assert {"type", "id", "name"} <= set(main["meta"]["added"][0])


def test_back_reference_event_on_inverse_field(sg: Any, shot: dict[str, Any]) -> None:
    task = sg.create("Task", {"content": "backref", "project": {"type": "Project", "id": 1}})
    start = last_event_id(sg)
    sg.update("Task", task["id"], {"entity": shot})
    evs = events_after(sg, start)
    main = next(e for e in evs if e["event_type"] == "Shotgun_Task_Change")
    back = next(e for e in evs if e["event_type"] == "Shotgun_Shot_Change")
    assert main["meta"]["new_value"] == {"type": "Shot", "id": shot["id"], "name": "evt_shot"}
    assert back["attribute_name"] == "tasks" and back["entity"]["id"] == shot["id"]
    assert back["meta"]["entity_type"] == "Shot" and back["meta"]["entity_id"] == shot["id"]
    assert back["meta"]["field_data_type"] == "multi_entity"
    assert back["meta"]["added"][0]["id"] == task["id"] and back["meta"]["removed"] == []
    assert back["meta"]["actual_attribute_changed"] == "Task.entity"
    assert back["meta"]["original_event_log_entry_id"] == main["id"]
    # the inverse field itself is maintained
    tasks = sg.find_one("Shot", [["id", "is", shot["id"]]], ["tasks"])["tasks"]
    assert {"type": "Task", "id": task["id"], "name": "backref"} in tasks


def test_retirement_and_revival_events(sg: Any, shot: dict[str, Any]) -> None:
    start = last_event_id(sg)
    sg.delete("Shot", shot["id"])
    evs = events_after(sg, start)
    assert [e["event_type"] for e in evs] == ["Shotgun_Shot_Change", "Shotgun_Shot_Retirement"]
    assert evs[0]["attribute_name"] == "retirement_date" and evs[0]["meta"]["old_value"] is None
    meta = evs[1]["meta"]
    assert meta["type"] == "entity_retirement" and meta["class_name"] == "Shot"
    assert meta["entity_id"] == shot["id"] and meta["display_name"] == "evt_shot"
    assert len(meta["retirement_date"]) == 23 and meta["retirement_date"].endswith(" UTC")
    # the entity is retired now, so every event about it reads back with a null entity
    assert all(e["entity"] is None for e in events_after(sg, start))
    start2 = last_event_id(sg)
    sg.revive("Shot", shot["id"])
    evs = events_after(sg, start2)
    assert [e["event_type"] for e in evs] == ["Shotgun_Shot_Change", "Shotgun_Shot_Revival"]
    assert evs[0]["meta"]["new_value"] is None and evs[0]["meta"]["old_value"] is not None
    assert "type" not in evs[1]["meta"] and evs[1]["meta"]["entity_id"] == shot["id"]
    assert evs[1]["entity"]["id"] == shot["id"]


def test_events_off_script_writes_none_but_moves_updated_at(studio_site: MockProcess, sg: Any,
                                                            shot: dict[str, Any]) -> None:
    quiet = studio_site.sg(script_name="quiet", api_key="quiet-key")
    before = sg.find_one("Shot", [["id", "is", shot["id"]]], ["updated_at"])["updated_at"]
    start = last_event_id(sg)
    import time
    time.sleep(1.05)
    quiet.update("Shot", shot["id"], {"description": "silent"})
    created = quiet.create("Shot", {"code": "silent", "project": {"type": "Project", "id": 1}})
    quiet.delete("Shot", created["id"])
    assert events_after(sg, start) == []
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["updated_at", "updated_by", "description"])
    assert row["description"] == "silent" and row["updated_at"] > before
    assert row["updated_by"]["name"] == "quiet"


def test_schema_field_create_update_delete_with_display_column_events(sg: Any) -> None:
    start = last_event_id(sg)
    name = sg.schema_field_create("Shot", "number", "Api Tests Number Field", {"description": "made by a test"})
    assert name == "sg_api_tests_number_field"
    fdef = sg.schema_field_read("Shot", name)[name]
    assert fdef["data_type"]["value"] == "number" and fdef["name"]["value"] == "Api Tests Number Field"
    assert fdef["description"]["value"] == "made by a test"
    assert name in sg.schema_read()["Shot"]
    s = sg.create("Shot", {"code": "with_field", name: 7})
    assert sg.find_one("Shot", [[name, "is", 7]])["id"] == s["id"]
    assert sg.schema_field_update("Shot", name, {"name": "Renamed Field"}) is True
    assert sg.schema_field_read("Shot", name)[name]["name"]["value"] == "Renamed Field"
    evs = [e for e in events_after(sg, start) if "DisplayColumn" in e["event_type"]]
    assert [e["event_type"] for e in evs] == ["Shotgun_DisplayColumn_New", "Shotgun_DisplayColumn_Change"]
    assert evs[0]["meta"]["human_name"] == "Api Tests Number Field" and evs[0]["meta"]["data_type"] == "number"
    assert "Shot" not in str(evs[0]["meta"])  # the site does not say which type owns the field
    start = last_event_id(sg)
    assert sg.schema_field_delete("Shot", name) is True
    assert name not in sg.schema_field_read("Shot")
    assert events_after(sg, start) == []
    with pytest.raises(shotgun_api3.Fault):
        sg.find("Shot", [[name, "is", 7]])


def test_schema_reads(sg: Any) -> None:
    ents = sg.schema_entity_read()
    assert ents["Shot"]["name"]["value"] and "visible" in ents["Shot"]
    fields = sg.schema_field_read("Shot")
    assert fields["code"]["data_type"]["value"] == "text"
    with pytest.raises(shotgun_api3.Fault):
        sg.schema_field_read("Shot", "no_such_field")


def test_batch_is_all_or_nothing(sg: Any, shot: dict[str, Any]) -> None:
    start = last_event_id(sg)
    before = sg.find_one("Shot", [["id", "is", shot["id"]]], ["code"])
    with pytest.raises(shotgun_api3.Fault):
        sg.batch([
            {"request_type": "create", "entity_type": "Shot", "data": {"code": "batch_rolled_back"}},
            {"request_type": "update", "entity_type": "Shot", "entity_id": shot["id"], "data": {"code": "changed"}},
            {"request_type": "delete", "entity_type": "Shot", "entity_id": 987654},
        ])
    assert sg.find("Shot", [["code", "is", "batch_rolled_back"]]) == []
    assert sg.find_one("Shot", [["id", "is", shot["id"]]], ["code"]) == before
    assert events_after(sg, start) == []
    res = sg.batch([
        {"request_type": "create", "entity_type": "Shot", "data": {"code": "batch_ok"}, "return_fields": ["code"]},
        {"request_type": "update", "entity_type": "Shot", "entity_id": shot["id"], "data": {"code": "b2"}},
        {"request_type": "delete", "entity_type": "Shot", "entity_id": shot["id"]},
    ])
    assert res[0]["code"] == "batch_ok" and res[1] == {"type": "Shot", "id": shot["id"], "code": "b2"}
    assert res[2] is True


def test_upload_download_round_trip(sg: Any, tmp_path: Any) -> None:
    path = tmp_path / "movie.mov"
    payload = bytes(range(256)) * 50
    path.write_bytes(payload)
    aid = sg.upload("Version", 1, str(path), field_name="sg_uploaded_movie", display_name="My Movie")
    v = sg.find_one("Version", [["id", "is", 1]], ["sg_uploaded_movie"])["sg_uploaded_movie"]
    assert v["id"] == aid and v["link_type"] == "upload" and v["name"] == "My Movie"
    assert v["url"].endswith(f"/file_serve/attachment/{aid}")
    assert sg.download_attachment(v) == payload
    assert sg.download_attachment(aid) == payload
    att = sg.find_one("Attachment", [["id", "is", aid]], ["filename", "file_size", "this_file", "attachment_links"])
    assert att["filename"] == "movie.mov" and att["file_size"] == len(payload)
    assert att["attachment_links"] == [{"type": "Version", "id": 1, "name": v and att["attachment_links"][0]["name"]}]
    out = tmp_path / "copy.mov"
    sg.download_attachment({"type": "Attachment", "id": aid}, file_path=str(out))
    assert out.read_bytes() == payload


def test_upload_thumbnail_sets_image_url(sg: Any, tmp_path: Any) -> None:
    import urllib.request

    from .conftest import PNG
    path = tmp_path / "thumb.png"
    path.write_bytes(PNG)
    sg.upload_thumbnail("Shot", 2, str(path))
    url = sg.find_one("Shot", [["id", "is", 2]], ["image"])["image"]
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url) as r:
        assert r.read() == PNG and r.headers["content-type"] == "image/png"
    assert sg.find_one("Shot", [["id", "is", 2]], ["sg_sequence.Sequence.id", "image"])["image"] == url


def test_upload_to_missing_entity_fails(sg: Any, tmp_path: Any) -> None:
    path = tmp_path / "x.txt"
    path.write_text("x")
    with pytest.raises(shotgun_api3.ShotgunError):
        sg.upload("Version", 987654, str(path), field_name="sg_uploaded_movie")


def test_paging_a_demo_type_through_the_client(sg: Any) -> None:
    total = sg.summarize("Task", [], [{"field": "id", "type": "record_count"}])["summaries"]["id"]
    rows = sg.find("Task", [], ["content", "entity", "step.Step.code"])
    assert len(rows) == total and [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert all(set(r) == {"type", "id", "content", "entity", "step.Step.code"} for r in rows)


def test_update_echoes_multi_entity_with_valid(sg: Any, shot: dict[str, Any]) -> None:
    r = sg.update("Shot", shot["id"], {"assets": [{"type": "Asset", "id": 1}]})
    assert r["assets"][0]["valid"] == "valid" and r["assets"][0]["id"] == 1 and "name" in r["assets"][0]


def test_events_carry_the_project(sg: Any, shot: dict[str, Any]) -> None:
    start = last_event_id(sg)
    sg.update("Shot", shot["id"], {"description": "with project"})
    (ev,) = events_after(sg, start)
    assert ev["project"]["type"] == "Project" and ev["project"]["id"] == 1


def test_schema_field_name_collisions_get_a_suffix(sg: Any) -> None:
    a = sg.schema_field_create("Asset", "text", "Collide")
    b = sg.schema_field_create("Asset", "text", "Collide")
    assert (a, b) == ("sg_collide", "sg_collide_1")


def test_concurrent_clients(studio_site: MockProcess) -> None:
    """Many clients at once (each with its own keep-alive socket): no errors, no lost writes."""
    import threading
    errors_: list[str] = []
    made: list[int] = []

    def work(k: int) -> None:
        sg = studio_site.sg()
        try:
            for i in range(15):
                made.append(sg.create("Shot", {"code": f"conc_{k}_{i}", "project": {"type": "Project", "id": 1}})["id"])
                sg.find("Shot", [["code", "starts_with", f"conc_{k}_"]], ["code", "sg_sequence.Sequence.code"])
        except Exception as e:  # noqa: BLE001 - any failure fails the test
            errors_.append(repr(e))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors_
    sg = studio_site.sg()
    assert len(sg.find("Shot", [["code", "starts_with", "conc_"]])) == 120 == len(set(made))
    news = sg.find("EventLogEntry", [["event_type", "is", "Shotgun_Shot_New"], ["entity", "in",
                                                                                [{"type": "Shot", "id": i} for i in made]]])
    assert len(news) == 120


def test_share_thumbnail(sg: Any, tmp_path: Any) -> None:
    from .conftest import PNG
    path = tmp_path / "share.png"
    path.write_bytes(PNG)
    aid = sg.share_thumbnail([{"type": "Shot", "id": 3}, {"type": "Shot", "id": 4}], thumbnail_path=str(path))
    images = {r["id"]: r["image"] for r in sg.find("Shot", [["id", "in", [3, 4]]], ["image"])}
    assert images[3] == images[4] and images[3].endswith(f"/thumbnail/{aid}")
    aid2 = sg.share_thumbnail([{"type": "Shot", "id": 5}], source_entity={"type": "Shot", "id": 3})
    assert aid2 == aid
    assert sg.find_one("Shot", [["id", "is", 5]], ["image"])["image"] == images[3]


def test_task_template_fans_out_into_tasks(sg: Any) -> None:
    tmpl = sg.create("TaskTemplate", {"code": "fan out", "entity_type": "Shot"})
    for content, step in (("Anim", 2), ("Comp", 5)):
        sg.create("Task", {"content": content, "task_template": tmpl, "step": {"type": "Step", "id": step},
                           "duration": 480})
    start = last_event_id(sg)
    shot = sg.create("Shot", {"code": "templated", "project": {"type": "Project", "id": 1}, "task_template": tmpl})
    tasks = sg.find("Task", [["entity", "is", shot]], ["content", "step", "project", "duration"])
    assert sorted(t["content"] for t in tasks) == ["Anim", "Comp"]
    assert all(t["project"]["id"] == 1 and t["duration"] == 480 for t in tasks)
    assert {t["id"] for t in tasks} == {t["id"] for t in sg.find_one("Shot", [["id", "is", shot["id"]]],
                                                                    ["tasks"])["tasks"]}
    types = [e["event_type"] for e in events_after(sg, start)]
    assert types.count("Shotgun_Task_New") == 2 and types[0] == "Shotgun_Shot_New"
