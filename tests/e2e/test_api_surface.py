"""Every public method of the shotgun_api3 client, through sgcache, behaves as against the site.

The list of methods is read off the installed client (`inspect.getmembers(Shotgun)`), so a
method a new client version adds fails `test_every_client_method_has_a_scenario` until it
gets a scenario here (and a line in docs/api3-methods.md). Each scenario runs once with a
client on the mock site and once with a client on the cache in front of it, on the same
world; the two results must be equal. Scenarios that write make their own entities and
return what does not depend on new ids; the run's tag (`runsite` or `runcache`) is masked.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import shotgun_api3

from tests.cache.dbs import BACKENDS, new_db_url

from .harness import Cache, Site, start_cache, start_site

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
       b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND"
       b"\xaeB`\x82")
LOGIN, PASSWORD = "surface.artist", "surface-password"

#: Public methods that never reach the site: they configure the client or build a URL.
LOCAL_ONLY = {
    "add_user_agent",  # appends to the client's User-Agent list
    "reset_user_agent",
    "set_session_uuid",  # stored in the client, sent with the next call's auth
    "close",  # closes the client's own connection
    "get_attachment_download_url",  # builds a URL from the base URL
    "schema",  # raises ShotgunError("Deprecated ...") in the client
    "entity_types",  # likewise
}


def client_methods() -> list[str]:
    """The client's public callables, as its own code defines them."""
    return sorted(n for n, v in inspect.getmembers(shotgun_api3.Shotgun)
                  if not n.startswith("_") and inspect.isfunction(v))


@dataclass
class World:
    """Entities made on the site before the cache's first scan."""

    tmp: Path
    project: dict[str, Any]
    shot: dict[str, Any]  # read-only fixture: a note thread and a follower
    version: dict[str, Any]
    note: dict[str, Any]
    attachment: int
    user: dict[str, Any]
    png: str


@dataclass
class Run:
    """One side of a comparison: a client on the site or on the cache."""

    url: str
    tag: str
    site: Site

    def make(self, **kw: Any) -> shotgun_api3.Shotgun:
        """A client on this side; the site's script unless other credentials are given."""
        if not any(k in kw for k in ("login", "session_token", "script_name")):
            kw.update(script_name=self.site.script_name, api_key=self.site.script_key)
        return shotgun_api3.Shotgun(self.url, **kw)

    def __post_init__(self) -> None:
        self.sg = self.make()


#: Direct-to-storage for Version movies and thumbnails; Shot uploads go through the site.
S3_TYPES = {"Version": ["sg_uploaded_movie", "thumb_image", "filmstrip_thumb_image"]}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = start_site("--human-user", f"{LOGIN}:{PASSWORD}", demo=300)
    # before the cache starts: it reuses the site's `info` for a while
    site_settings(s, s3_direct_uploads_enabled=True, s3_enabled_upload_types=S3_TYPES)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def world(site: Site, tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("surface")
    png = tmp / "thumb.png"
    png.write_bytes(PNG)
    sg = site.sg()
    project = {"type": "Project", "id": 1}
    user = sg.find_one("HumanUser", [["login", "is", LOGIN]], ["name", "login"])
    shot = sg.create("Shot", {"code": "surface_searchable_0001", "project": project})
    version = sg.create("Version", {"code": "surface_v001", "entity": shot, "project": project})
    note = sg.create("Note", {"content": "fixture note", "project": project, "note_links": [shot]})
    sg.create("Reply", {"content": "fixture reply", "entity": note, "user": user})
    attachment = sg.upload("Note", note["id"], str(png))
    sg.follow({"type": "HumanUser", "id": user["id"]}, {"type": "Shot", "id": shot["id"]})
    sg.upload_thumbnail("Shot", shot["id"], str(png))
    return World(tmp, project, shot, version, note, attachment, user, str(png))


@pytest.fixture(scope="module", params=BACKENDS)
def cache(request: pytest.FixtureRequest, site: Site, world: World,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    tmp = tmp_path_factory.mktemp("surface-cache")
    for db_url in new_db_url(request.param, tmp):
        # No event watcher: only write-through may bring the caller's writes into the cache.
        c = start_cache(site, db_url, tmp, "--no-sync")
        yield c
        c.stop()


def site_settings(site: Site, **kw: Any) -> dict[str, Any]:
    return httpx.post(site.admin_url + "/settings", json=kw, timeout=10).json()


# -- scenarios: one per client method ------------------------------------------------------------
Scenario = Callable[[Run, World], Any]
SCENARIOS: dict[str, Scenario] = {}


def scenario(*names: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        for n in names:
            SCENARIOS[n] = fn
        return fn
    return register


def fault(call: Callable[[], Any]) -> Any:
    """A call's result, or the error it raised, as comparable data."""
    try:
        return call()
    except shotgun_api3.ShotgunError as e:
        return {"raised": type(e).__name__, "message": str(e)}


@scenario("info")
def _info(r: Run, w: World) -> Any:
    info = r.sg.info()
    info.pop("sgcache", None)  # the cache's own status, added to the site's answer
    return info


@scenario("connect")
def _connect(r: Run, w: World) -> Any:
    sg = r.make(connect=False)
    sg.connect()
    return {k: v for k, v in sg.server_info.items() if k != "sgcache"}


@scenario("find", "find_one")
def _find(r: Run, w: World) -> Any:
    sg = r.sg
    latest = [{"preset_name": "LATEST", "latest_by": "ENTITIES_CREATED_AT"}]
    fixture = ["id", "is", w.shot["id"]]
    demo = ["code", "starts_with", "SQ"]  # what no scenario writes
    return [
        sg.find("Shot", [fixture, demo], ["code", "sg_sequence", "image"], filter_operator="any",
                order=[{"field_name": "code", "direction": "desc"}], limit=20),
        sg.find_one("Version", [["id", "is", w.version["id"]]], ["code", "entity.Shot.image", "image"]),
        sg.find("Version", [["code", "not_contains", "surface_run"]], ["code", "entity"],
                additional_filter_presets=latest),
        fault(lambda: sg.find("Version", [], ["code"], additional_filter_presets=[{"preset_name": "NOPE"}])),
        sg.find("Shot", [["code", "starts_with", "SQ"]], ["code"], page=2, limit=5),
    ]


@scenario("summarize")
def _summarize(r: Run, w: World) -> Any:
    return r.sg.summarize("Shot", [["code", "starts_with", "SQ"]], [{"field": "id", "type": "count"}],
                          grouping=[{"field": "sg_status_list", "type": "exact", "direction": "asc"}])


@scenario("create", "update")
def _create_update(r: Run, w: World) -> Any:
    sg = r.sg
    shot = sg.create("Shot", {"code": f"surface_{r.tag}_cu", "project": w.project,
                              "sg_status_list": "ip"}, ["sg_status_list"])
    upd = sg.update("Shot", shot["id"], {"description": "changed", "sg_status_list": "fin"})
    back = sg.find_one("Shot", [["id", "is", shot["id"]]], ["code", "description", "sg_status_list"])
    return [{k: v for k, v in shot.items() if k != "id"}, {k: v for k, v in upd.items() if k != "id"},
            {k: v for k, v in back.items() if k != "id"}]


@scenario("delete", "revive")
def _delete_revive(r: Run, w: World) -> Any:
    sg = r.sg
    shot = sg.create("Shot", {"code": f"surface_{r.tag}_dr", "project": w.project})
    seen = [sg.delete("Shot", shot["id"]), sg.delete("Shot", shot["id"]),
            sg.find_one("Shot", [["id", "is", shot["id"]]]) is None]
    seen += [sg.revive("Shot", shot["id"]), sg.revive("Shot", shot["id"]),
             sg.find_one("Shot", [["id", "is", shot["id"]]], ["code"])["code"]]
    return seen + [fault(lambda: sg.delete("Shot", 99999999))]


@scenario("batch")
def _batch(r: Run, w: World) -> Any:
    sg = r.sg
    made, = sg.batch([{"request_type": "create", "entity_type": "Shot",
                       "data": {"code": f"surface_{r.tag}_b", "project": w.project}}])
    out = sg.batch([{"request_type": "update", "entity_type": "Shot", "entity_id": made["id"],
                     "data": {"description": "batched"}},
                    {"request_type": "delete", "entity_type": "Shot", "entity_id": made["id"]}])
    return [sorted(made), {k: v for k, v in out[0].items() if k != "id"}, out[1],
            sg.find("Shot", [["id", "is", made["id"]]], ["description"], retired_only=True)[0]["description"]]


@scenario("schema_read", "schema_entity_read")
def _schema(r: Run, w: World) -> Any:
    return [r.sg.schema_read()["Shot"], r.sg.schema_entity_read()["Shot"],
            r.sg.schema_entity_read(w.project)["Shot"]]


@scenario("schema_field_read", "schema_field_create", "schema_field_update", "schema_field_delete")
def _schema_fields(r: Run, w: World) -> Any:
    sg = r.sg
    name = sg.schema_field_create("Shot", "text", f"Surface {r.tag} Field", {"description": "made"})
    updated = sg.schema_field_update("Shot", name, {"description": "changed"})
    field = sg.schema_field_read("Shot", name)[name]
    gone = sg.schema_field_delete("Shot", name)
    return [name, updated, field["description"], field["data_type"], gone,
            sg.schema_field_read("Shot", "code"), fault(lambda: sg.schema_field_read("Shot", name))]


@scenario("get_session_token", "get_auth_cookie_handler")
def _session(r: Run, w: World) -> Any:
    token = r.sg.get_session_token()
    by_token = r.make(session_token=token)
    cookie = r.make().get_auth_cookie_handler()
    return [by_token.find_one("Project", [["id", "is", 1]], ["name"]), type(cookie).__name__]


@scenario("authenticate_human_user")
def _authenticate(r: Run, w: World) -> Any:
    return [r.sg.authenticate_human_user(LOGIN, PASSWORD),
            fault(lambda: r.sg.authenticate_human_user(LOGIN, "wrong"))]


@scenario("note_thread_read")
def _note_thread(r: Run, w: World) -> Any:
    return [r.sg.note_thread_read(w.note["id"]),
            r.sg.note_thread_read(w.note["id"], {"Note": ["note_links", "subject"], "Attachment": ["this_file"]}),
            fault(lambda: r.sg.note_thread_read(99999999))]


@scenario("activity_stream_read")
def _activity(r: Run, w: World) -> Any:
    return [r.sg.activity_stream_read("Shot", w.shot["id"], {"Note": ["content"]}),
            r.sg.activity_stream_read("Shot", w.shot["id"], limit=1)]


@scenario("text_search")
def _text_search(r: Run, w: World) -> Any:
    return [r.sg.text_search("surface_searchable", {"Shot": [["project", "is", w.project]]}),
            fault(lambda: r.sg.text_search("ab", {"Shot": []}))]


@scenario("follow", "unfollow", "followers", "following")
def _follows(r: Run, w: World) -> Any:
    sg = r.sg
    u = {"type": "HumanUser", "id": w.user["id"]}
    v = {"type": "Version", "id": w.version["id"]}
    out = [sg.follow(u, v), sg.followers(v), sg.following(u), sg.following(u, project=w.project,
                                                                          entity_type="Version")]
    out += [sg.unfollow(u, v), sg.followers(v), sg.followers({"type": "Shot", "id": w.shot["id"]})]
    return out


@scenario("work_schedule_read", "work_schedule_update")
def _work_schedule(r: Run, w: World) -> Any:
    sg = r.sg
    return [sg.work_schedule_update("2032-05-05", False, "surface day off", project=w.project),
            sg.work_schedule_read("2032-05-03", "2032-05-09", project=w.project),
            fault(lambda: sg.work_schedule_update("2032-05-06", False, project=w.project,
                                                  user={"type": "HumanUser", "id": w.user["id"]}))]


@scenario("preferences_read")
def _prefs(r: Run, w: World) -> Any:
    return [r.sg.preferences_read(), r.sg.preferences_read(["hours_per_day", "nope"])]


@scenario("user_subscriptions_read", "user_subscriptions_create")
def _subscriptions(r: Run, w: World) -> Any:
    return [r.sg.user_subscriptions_create([{"humanUserId": w.user["id"], "subscription": "SG_REVIEW"}]),
            r.sg.user_subscriptions_read()]


@scenario("update_project_last_accessed")
def _last_accessed(r: Run, w: World) -> Any:
    human = r.make(login=LOGIN, password=PASSWORD)  # the user comes from the caller's own credentials
    return [human.update_project_last_accessed(w.project),
            fault(lambda: r.sg.update_project_last_accessed(w.project))]


@scenario("export_page", "nav_expand", "nav_search_string", "nav_search_entity")
def _refused(r: Run, w: World) -> Any:
    sg = r.sg
    return [fault(lambda: sg.export_page(3, "csv")), fault(lambda: sg.export_page(3, None)),
            fault(lambda: sg.nav_expand("/Project/1")), fault(lambda: sg.nav_search_string("/Project/1", "abc")),
            fault(lambda: sg.nav_search_entity("/Project/1", w.shot))]


@scenario("upload", "download_attachment")
def _upload(r: Run, w: World) -> Any:
    sg = r.sg
    data = os.urandom(300_000)
    path = w.tmp / f"{r.tag}.bin"
    path.write_bytes(data)
    version = sg.create("Version", {"code": f"surface_{r.tag}_up", "project": w.project})
    aid = sg.upload("Version", version["id"], str(path), field_name="sg_uploaded_movie", display_name="take")
    movie = sg.find_one("Version", [["id", "is", version["id"]]], ["sg_uploaded_movie"])["sg_uploaded_movie"]
    plain = sg.upload("Shot", w.shot["id"], w.png, tag_list="a,b")
    return [movie["id"] == aid, movie["name"], sg.download_attachment(aid) == data,
            sg.download_attachment(movie) == data, sg.download_attachment({"type": "Attachment", "id": plain}) == PNG,
            fault(lambda: sg.upload("Shot", 99999999, w.png))]


@scenario("upload_thumbnail", "upload_filmstrip_thumbnail", "share_thumbnail")
def _thumbnails(r: Run, w: World) -> Any:
    sg = r.sg
    a = sg.create("Version", {"code": f"surface_{r.tag}_t1", "project": w.project})
    b = sg.create("Version", {"code": f"surface_{r.tag}_t2", "project": w.project})
    before = sg.find_one("Version", [["id", "is", a["id"]]], ["updated_at"])["updated_at"]
    sg.upload_thumbnail("Version", a["id"], w.png)
    sg.upload_filmstrip_thumbnail("Version", a["id"], w.png)
    # image fields pass through the cache; the entity's other fields come back through write-through
    row = sg.find_one("Version", [["id", "is", a["id"]]], ["image", "filmstrip_image"])
    stamps = ["updated_at", "updated_by"]
    seen = sg.find_one("Version", [["id", "is", a["id"]]], stamps)
    shared = sg.share_thumbnail([{"type": "Version", "id": b["id"]}], source_entity=a)
    got_b = sg.find_one("Version", [["id", "is", b["id"]]], ["image"])["image"]
    on_site = r.site.sg()
    return ["/thumbnail/" in row["image"], "/thumbnail/" in row["filmstrip_image"],
            seen["updated_at"] >= before, seen == on_site.find_one("Version", [["id", "is", a["id"]]], stamps),
            sg.find_one("Version", [["id", "is", b["id"]]], stamps) ==
            on_site.find_one("Version", [["id", "is", b["id"]]], stamps),
            got_b == row["image"], got_b.endswith(f"/{shared}")]


# -- the tests ---------------------------------------------------------------------------------------

def test_every_client_method_has_a_scenario() -> None:
    methods = set(client_methods())
    missing = methods - set(SCENARIOS) - LOCAL_ONLY
    assert not missing, f"client methods without a scenario (add one, and a line in docs/api3-methods.md): {missing}"
    assert not (set(SCENARIOS) | LOCAL_ONLY) - methods, "scenarios for methods the client no longer has"


def _run(fn: Scenario, r: Run, w: World) -> Any:
    text = json.dumps(fn(r, w), default=str, sort_keys=True)
    # URLs: the site's in data (both runs), the client's own base URL in error messages
    return json.loads(text.replace(r.tag, "<tag>").replace(r.url, "<url>").replace(r.site.url, "<url>"))


@pytest.mark.parametrize("method", [m for m in client_methods() if m not in LOCAL_ONLY])
def test_method_behaves_through_the_cache_as_against_the_site(
        method: str, site: Site, world: World, cache: Cache) -> None:
    fn = SCENARIOS.get(method)
    if fn is None:
        pytest.fail(f"no scenario for {method}")
    theirs = _run(fn, Run(site.url, "runsite", site), world)
    mine = _run(fn, Run(cache.url, "runcache", site), world)
    assert mine == theirs


def test_direct_to_storage_uploads_through_the_cache(site: Site, world: World, cache: Cache) -> None:
    """The site's upload flags reach the client unchanged; the bytes go straight to storage,
    the link step goes through the cache and is written through."""
    sg = cache.sg(site)
    assert sg.server_info["s3_direct_uploads_enabled"] is True
    assert sg.server_info["s3_enabled_upload_types"] == S3_TYPES
    sg._MULTIPART_UPLOAD_CHUNK_SIZE = 100_000  # force the multipart flow on a small file
    data = os.urandom(250_000)
    path = world.tmp / "direct.mov"
    path.write_bytes(data)
    v = sg.create("Version", {"code": "surface_direct", "project": world.project})
    site.reset_stats()
    aid = sg.upload("Version", v["id"], str(path), field_name="sg_uploaded_movie")
    reqs = site.stats()["requests"]
    assert reqs.get("storage") == 3 and reqs.get("upload:api_link_file") == 1
    assert reqs.get("upload:api_complete_multipart_upload") == 1
    site.reset_stats()
    movie = sg.find_one("Version", [["id", "is", v["id"]]], ["sg_uploaded_movie"])["sg_uploaded_movie"]
    assert site.stats()["requests"].get("read", 0) == 0, "the movie field was read from the cache"
    assert movie["id"] == aid and sg.download_attachment(aid) == data


def test_pending_thumbnail_reads_the_same_through_the_cache(site: Site, world: World, cache: Cache) -> None:
    site_settings(site, thumbnail_delay=30)
    try:
        sg = cache.sg(site)
        v = sg.create("Version", {"code": "surface_pending", "project": world.project})
        sg.upload_thumbnail("Version", v["id"], world.png)
        mine = sg.find_one("Version", [["id", "is", v["id"]]], ["image"])["image"]
        assert "/images/status/transient/" in mine
        assert mine == site.sg().find_one("Version", [["id", "is", v["id"]]], ["image"])["image"]
        with pytest.raises(shotgun_api3.ShotgunThumbnailNotReady):
            sg.share_thumbnail([{"type": "Shot", "id": world.shot["id"]}], source_entity=v)
    finally:
        site_settings(site, thumbnail_delay=0)


def test_large_files_stream_through_the_cache(site: Site, world: World, cache: Cache) -> None:
    """An upload and a download bigger than any buffer the cache would keep."""
    sg = cache.sg(site)
    data = os.urandom(24 * 1024 * 1024)
    path = world.tmp / "large.bin"
    path.write_bytes(data)
    aid = sg.upload("Shot", world.shot["id"], str(path))
    out = world.tmp / "large.out"
    sg.download_attachment(aid, file_path=str(out))
    assert out.read_bytes() == data
