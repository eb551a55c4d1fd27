"""The api3 methods beyond CRUD, through the real client: shapes and refusals as the site's."""

from __future__ import annotations

import datetime as dt
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shotgun_api3

from tests.support.procs import MockProcess

from .conftest import PNG

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


@pytest.fixture(scope="module")
def sg(studio_site: MockProcess) -> Any:
    return studio_site.sg()


@pytest.fixture
def settings(studio_site: MockProcess) -> Iterator[Any]:
    """Change site settings for one test; restored afterwards."""
    before = studio_site.admin("GET", "/settings")
    yield lambda **kw: studio_site.admin("POST", "/settings", kw)
    studio_site.admin("POST", "/settings", before)


@pytest.fixture
def png(tmp_path: Path) -> str:
    p = tmp_path / "thumb.png"
    p.write_bytes(PNG)
    return str(p)


@pytest.fixture
def shot(sg: Any) -> dict[str, Any]:
    return sg.create("Shot", {"code": "fam_shot", "project": {"type": "Project", "id": 1}})


@pytest.fixture
def user(sg: Any) -> dict[str, Any]:
    return sg.find_one("HumanUser", [["sg_status_list", "is", "act"]], ["name"])


def test_info_carries_the_flags_the_client_and_toolkit_read(sg: Any) -> None:
    info = sg.info()
    assert info["version"][0] >= 8 and info["api_max_entities_per_page"] == 500
    assert info["s3_direct_uploads_enabled"] is False and isinstance(info["s3_enabled_upload_types"], dict)
    assert info["user_authentication_method"] == "default"


# -- note threads ---------------------------------------------------------------------------

def test_note_thread_is_the_note_then_replies_and_attachments_in_creation_order(
        sg: Any, shot: dict[str, Any], user: dict[str, Any], png: str) -> None:
    note = sg.create("Note", {"content": "look", "project": shot["project"], "note_links": [shot]})
    reply = sg.create("Reply", {"content": "seen", "entity": note, "user": user})
    att = sg.upload("Note", note["id"], png)
    thread = sg.note_thread_read(note["id"])
    assert [(r["type"], r["id"]) for r in thread] == [("Note", note["id"]), ("Reply", reply["id"]),
                                                       ("Attachment", att)]
    n, r, a = thread
    assert set(n) == {"type", "id", "content", "created_at", "created_by"} and n["content"] == "look"
    assert STAMP.match(n["created_at"]) and n["created_by"]["valid"] == "valid"
    assert set(r) == {"type", "id", "content", "created_at", "user"}
    assert r["user"]["id"] == user["id"] and r["user"]["name"] == user["name"] and "image" in r["user"]
    assert set(a) == {"type", "id", "created_at", "created_by"}


def test_note_thread_adds_the_requested_fields(sg: Any, shot: dict[str, Any]) -> None:
    note = sg.create("Note", {"content": "x", "subject": "subj", "project": shot["project"], "note_links": [shot]})
    thread = sg.note_thread_read(note["id"], {"Note": ["subject", "note_links"]})
    assert thread[0]["subject"] == "subj"
    assert thread[0]["note_links"] == [{"type": "Shot", "id": shot["id"], "name": "fam_shot"}]


def test_note_thread_of_a_missing_note_is_a_fault(sg: Any) -> None:
    with pytest.raises(shotgun_api3.Fault, match="does not exist"):
        sg.note_thread_read(99999999)


# -- activity stream -----------------------------------------------------------------------------

def test_activity_stream_is_newest_first_and_pages_by_id(sg: Any, shot: dict[str, Any]) -> None:
    sg.create("Note", {"content": "n1", "project": shot["project"], "note_links": [shot]})
    sg.update("Shot", shot["id"], {"sg_status_list": "fin"})
    stream = sg.activity_stream_read("Shot", shot["id"])
    assert set(stream) == {"earliest_update_id", "entity_id", "entity_type", "latest_update_id", "updates"}
    kinds = [(u["update_type"], u["meta"].get("entity_type")) for u in stream["updates"]]
    assert kinds == [("update", "Shot"), ("create", "Note"), ("create", "Shot")]
    ids = [u["id"] for u in stream["updates"]]
    assert ids == sorted(ids, reverse=True) and stream["latest_update_id"] == ids[0]
    first = stream["updates"][0]
    assert STAMP.match(first["created_at"]) and first["read"] is False
    assert set(first["primary_entity"]) == {"type", "id", "name", "status"}
    assert first["primary_entity"]["status"] == "fin" and "image" in first["created_by"]
    one = sg.activity_stream_read("Shot", shot["id"], limit=1)
    assert [u["id"] for u in one["updates"]] == ids[:1]
    older = sg.activity_stream_read("Shot", shot["id"], max_id=ids[1])
    assert [u["id"] for u in older["updates"]] == ids[1:]
    extra = sg.activity_stream_read("Shot", shot["id"], entity_fields={"Shot": ["code"]})
    assert extra["updates"][0]["primary_entity"]["code"] == "fam_shot"


def test_text_search_links_a_task_to_its_entity(sg: Any, shot: dict[str, Any]) -> None:
    sg.create("Task", {"content": "famlinktask", "entity": shot, "project": shot["project"]})
    found = sg.text_search("famlinktask", {"Task": []})
    assert found["terms"] == ["famlinktask"]
    assert [(m["name"], m["links"]) for m in found["matches"]] == [("famlinktask", ["Shot", "fam_shot"])]


def test_work_schedule_refuses_to_recalculate_tasks(sg: Any) -> None:
    with pytest.raises(shotgun_api3.Fault, match="recalculate"):
        sg.work_schedule_update("2031-04-01", False, recalculate_field="due_date")


# -- follows --------------------------------------------------------------------------------------

def test_follow_unfollow_followers_following(sg: Any, shot: dict[str, Any], user: dict[str, Any]) -> None:
    u = {"type": "HumanUser", "id": user["id"]}
    s = {"type": "Shot", "id": shot["id"]}
    assert sg.follow(u, s) == {"followed": True, "user": u, "entity": s}
    assert sg.follow(u, s)["followed"] is True  # twice changes nothing
    assert sg.followers(s) == [{"type": "HumanUser", "id": user["id"], "name": user["name"], "status": "act",
                                "valid": "valid"}]
    assert s in sg.following(u) and s in sg.following(u, project={"type": "Project", "id": 1},
                                                       entity_type="Shot")
    assert s not in sg.following(u, entity_type="Asset")
    assert sg.unfollow(u, s) == {"unfollowed": True, "user": u, "entity": s}
    assert sg.followers(s) == [] and sg.unfollow(u, s)["unfollowed"] is True


def test_follow_of_a_missing_entity_is_a_fault(sg: Any, user: dict[str, Any]) -> None:
    with pytest.raises(shotgun_api3.Fault, match="does not exist"):
        sg.follow({"type": "HumanUser", "id": user["id"]}, {"type": "Shot", "id": 99999999})


# -- work schedule, preferences, subscriptions, last access -----------------------------------------

def test_work_schedule_exceptions_win_by_level(sg: Any, user: dict[str, Any]) -> None:
    project = {"type": "Project", "id": 1}
    hu = {"type": "HumanUser", "id": user["id"]}
    assert sg.work_schedule_update("2031-03-04", False, "studio day off") == {
        "date": "2031-03-04", "description": "studio day off", "project": None, "user": None, "working": False}
    sg.work_schedule_update("2031-03-05", False, "project day off", project=project)
    sg.work_schedule_update("2031-03-05", True, "user works", user=hu)
    week = sg.work_schedule_read("2031-03-03", "2031-03-09", project=project, user=hu)
    assert list(week) == [f"2031-03-{d:02d}" for d in range(3, 10)]
    assert week["2031-03-03"] == {"working": True, "description": None, "reason": "STUDIO_WORK_WEEK"}
    assert week["2031-03-04"]["reason"] == "STUDIO_EXCEPTION" and week["2031-03-04"]["working"] is False
    assert week["2031-03-05"] == {"working": True, "description": "user works", "reason": "USER_EXCEPTION"}
    assert week["2031-03-08"]["working"] is False  # a Saturday
    assert sg.work_schedule_read("2031-03-05", "2031-03-05", project=project)["2031-03-05"]["reason"] == \
        "PROJECT_EXCEPTION"
    with pytest.raises(shotgun_api3.Fault):
        sg.work_schedule_update("2031-03-06", False, project=project, user=hu)
    with pytest.raises(shotgun_api3.Fault):
        sg.work_schedule_read("2031-03-09", "2031-03-03")


def test_preferences_read_leaves_out_unknown_names(sg: Any) -> None:
    everything = sg.preferences_read()
    assert everything["hours_per_day"] == 8.0 and "view_master_settings" in everything
    assert sg.preferences_read(["date_component_order", "no_such_pref"]) == {"date_component_order": "month_day"}


def test_user_subscriptions_round_trip(sg: Any, user: dict[str, Any]) -> None:
    assert sg.user_subscriptions_create([{"humanUserId": user["id"], "subscription": ["SG_REVIEW"]}]) is True
    assert {"humanUserId": user["id"], "subscription": ["SG_REVIEW"]} in sg.user_subscriptions_read()
    with pytest.raises(shotgun_api3.Fault):
        sg.user_subscriptions_create([{"humanUserId": 99999999, "subscription": None}])


def test_update_project_last_accessed(sg: Any, user: dict[str, Any]) -> None:
    sg.update_project_last_accessed({"type": "Project", "id": 1}, {"type": "HumanUser", "id": user["id"]})
    with pytest.raises(shotgun_api3.Fault, match="user_id"):  # a script must name the user
        sg.update_project_last_accessed({"type": "Project", "id": 1})


def test_what_the_mock_cannot_model_is_refused_with_the_sites_error(sg: Any, shot: dict[str, Any]) -> None:
    with pytest.raises(shotgun_api3.Fault, match=r"^Export for Page id=7 not available$"):
        sg.export_page(7, "csv")
    with pytest.raises(shotgun_api3.Fault, match=r"^'format' missing$"):
        sg.export_page(7, None)
    for call in (lambda: sg.nav_expand("/Project/1"), lambda: sg.nav_search_string("/Project/1", "abc"),
                 lambda: sg.nav_search_entity("/Project/1", shot)):
        with pytest.raises(shotgun_api3.Fault, match="navigation hierarchy"):
            call()


# -- additional_filter_presets ---------------------------------------------------------------------

def test_latest_preset_keeps_the_last_version_per_entity(sg: Any, shot: dict[str, Any]) -> None:
    p = {"type": "Project", "id": 1}
    other = sg.create("Shot", {"code": "fam_other", "project": p})
    v1 = sg.create("Version", {"code": "fam_v1", "entity": shot, "project": p})
    v2 = sg.create("Version", {"code": "fam_v2", "entity": shot, "project": p})
    v3 = sg.create("Version", {"code": "fam_v3", "entity": other, "project": p})
    latest = [{"preset_name": "LATEST", "latest_by": "ENTITIES_CREATED_AT"}]
    got = sg.find("Version", [["code", "starts_with", "fam_v"]], ["code"], additional_filter_presets=latest)
    assert sorted(r["id"] for r in got) == [v2["id"], v3["id"]]
    # the preset narrows what the filters select: v1 is the latest of {v1}
    only_v1 = sg.find("Version", [["id", "is", v1["id"]]], ["code"], additional_filter_presets=latest)
    assert [r["id"] for r in only_v1] == [v1["id"]]
    assert sg.find_one("Version", [["entity", "is", shot]], ["code"], additional_filter_presets=latest)["id"] == v2["id"]


def test_latest_by_pipeline_step_prefers_the_furthest_step(sg: Any, shot: dict[str, Any]) -> None:
    p = {"type": "Project", "id": 1}
    steps = sg.find("Step", [["list_order", "is_not", None]], ["list_order"], order=[{"field_name": "list_order"}])
    early, late = steps[0], steps[-1]
    t_early = sg.create("Task", {"content": "fam_t1", "entity": shot, "project": p, "step": early})
    t_late = sg.create("Task", {"content": "fam_t2", "entity": shot, "project": p, "step": late})
    v_late = sg.create("Version", {"code": "fam_s1", "entity": shot, "project": p, "sg_task": t_late})
    sg.create("Version", {"code": "fam_s2", "entity": shot, "project": p, "sg_task": t_early})
    got = sg.find("Version", [["entity", "is", shot]], ["code"], additional_filter_presets=[
        {"preset_name": "LATEST", "latest_by": "BY_PIPELINE_STEP_NUMBER_AND_ENTITIES_CREATED_AT"}])
    assert [r["id"] for r in got] == [v_late["id"]]


@pytest.mark.parametrize("presets", [
    [{}], [{"preset_name": "BAD_FILTER"}], 3, [3],
    [{"preset_name": "LATEST", "latest_by": "ENTITY_CREATED_AT"}],
    [{"preset_name": "LATEST", "latest_by": "ENTITIES_CREATED_AT"},
     {"preset_name": "LATEST", "latest_by": "BY_PIPELINE_STEP_NUMBER_AND_ENTITIES_CREATED_AT"}],
    [{"preset_name": "CUT_SHOT_VERSIONS", "cut_id": 1}],  # the studio schema has no CutItem
], ids=["empty", "unknown", "not-a-list", "not-dicts", "bad-latest-by", "two-latest", "no-cut-items"])
def test_bad_presets_are_faults(sg: Any, presets: Any) -> None:
    with pytest.raises(shotgun_api3.Fault, match="additional_filter_presets"):
        sg.find("Version", [], ["code"], additional_filter_presets=presets)


# -- thumbnails and uploads ------------------------------------------------------------------------

def test_thumbnail_is_pending_until_processed(sg: Any, settings: Any, shot: dict[str, Any], png: str) -> None:
    settings(thumbnail_delay=1.0)
    sg.upload_thumbnail("Shot", shot["id"], png)
    pending = sg.find_one("Shot", [["id", "is", shot["id"]]], ["image"])["image"]
    assert "/images/status/transient/" in pending
    with urllib.request.urlopen(pending, timeout=10) as r:
        assert r.headers["content-type"] == "image/png"
    with pytest.raises(shotgun_api3.ShotgunThumbnailNotReady):
        sg.share_thumbnail([{"type": "Shot", "id": 2}], source_entity=shot)
    deadline = time.monotonic() + 10
    while "/transient/" in sg.find_one("Shot", [["id", "is", shot["id"]]], ["image"])["image"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ready = sg.find_one("Shot", [["id", "is", shot["id"]]], ["image"])["image"]
    with urllib.request.urlopen(ready, timeout=10) as r:
        assert r.read() == PNG
    version = sg.create("Version", {"code": "fam_img", "entity": shot, "project": shot["project"]})
    assert sg.find_one("Version", [["id", "is", version["id"]]], ["entity.Shot.image"])["entity.Shot.image"] == ready
    sg.share_thumbnail([{"type": "Version", "id": version["id"]}], source_entity=shot)
    assert sg.find_one("Version", [["id", "is", version["id"]]], ["image"])["image"] == ready


def test_thumbnail_url_lookup_of_old_clients(studio_site: MockProcess, sg: Any, shot: dict[str, Any],
                                              png: str) -> None:
    def lookup(etype: str, eid: int) -> list[str]:
        url = f"{studio_site.url}/upload/get_thumbnail_url?entity_type={etype}&entity_id={eid}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode().splitlines()
    assert lookup("Shot", shot["id"])[0] == "0"
    sg.upload_thumbnail("Shot", shot["id"], png)
    code, path = lookup("Shot", shot["id"])
    assert code == "1" and sg.find_one("Shot", [["id", "is", shot["id"]]], ["image"])["image"].endswith(path)


def test_filmstrip_upload_sets_filmstrip_image_and_clearing_the_image_clears_both(sg: Any, png: str) -> None:
    v = sg.create("Version", {"code": "fam_strip", "project": {"type": "Project", "id": 1}})
    sg.upload_filmstrip_thumbnail("Version", v["id"], png)
    row = sg.find_one("Version", [["id", "is", v["id"]]], ["image", "filmstrip_image"])
    assert row["image"] is None and "/thumbnail/" in row["filmstrip_image"]
    sg.upload_thumbnail("Version", v["id"], png)
    assert sg.update("Version", v["id"], {"image": None}) == {"type": "Version", "id": v["id"], "image": None}
    row = sg.find_one("Version", [["id", "is", v["id"]]], ["image", "filmstrip_image"])
    assert row == {"type": "Version", "id": v["id"], "image": None, "filmstrip_image": None}


@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
def test_direct_to_storage_upload(studio_site: MockProcess, settings: Any, tmp_path: Path,
                                  multipart: bool) -> None:
    settings(s3_direct_uploads_enabled=True)
    sg = studio_site.sg()
    if multipart:
        sg._MULTIPART_UPLOAD_CHUNK_SIZE = 1000  # the client's threshold and part size
    movie = tmp_path / "take.mov"
    movie.write_bytes(bytes(range(256)) * 20)
    v = sg.create("Version", {"code": "fam_s3", "project": {"type": "Project", "id": 1}})
    studio_site.reset_stats()
    aid = sg.upload("Version", v["id"], str(movie), field_name="sg_uploaded_movie")
    requests = studio_site.stats()["requests"]
    assert requests.get("upload:api_link_file") == 1 and "upload:upload_file" not in requests
    assert requests.get("storage") == (6 if multipart else 1)  # 5,120 bytes in parts of 1,000
    assert requests.get("upload:api_complete_multipart_upload", 0) == (1 if multipart else 0)
    field = sg.find_one("Version", [["id", "is", v["id"]]], ["sg_uploaded_movie"])["sg_uploaded_movie"]
    assert field["id"] == aid and field["content_type"] == "video/quicktime" and field["link_type"] == "upload"
    assert sg.download_attachment(field) == movie.read_bytes()


def test_direct_thumbnail_upload(studio_site: MockProcess, settings: Any, png: str) -> None:
    settings(s3_direct_uploads_enabled=True, s3_enabled_upload_types={"*": "*"})
    sg = studio_site.sg()
    s = sg.create("Shot", {"code": "fam_s3_thumb", "project": {"type": "Project", "id": 1}})
    studio_site.reset_stats()
    sg.upload_thumbnail("Shot", s["id"], png)
    assert studio_site.stats()["requests"].get("storage") == 1
    assert "/thumbnail/" in sg.find_one("Shot", [["id", "is", s["id"]]], ["image"])["image"]


def test_storage_refuses_a_bad_signature(studio_site: MockProcess) -> None:
    req = urllib.request.Request(studio_site.url + "/storage/abc?X-Amz-Signature=0", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()


def test_upload_link_for_an_unknown_upload_type_is_refused(sg: Any) -> None:
    sg.server_info  # noqa: B018 - connects
    reply = sg._send_form(sg.config.scheme + "://" + sg.config.server + "/upload/api_get_upload_link_info",
                          {"upload_type": "Movie", "filename": "a.mov", "multipart_upload": False})
    assert reply.startswith("0\n")


def test_created_at_of_an_upload_is_kept(sg: Any, shot: dict[str, Any], png: str) -> None:
    when = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    aid = sg.upload("Shot", shot["id"], png, created_at=when)
    assert sg.find_one("Attachment", [["id", "is", aid]], ["created_at"])["created_at"] == when
