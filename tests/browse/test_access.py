"""Who gets to see /browse: a valid session or nothing; forged, altered and expired cookies
refused; sign-in and sign-out only from our own forms; a vendor sees only their own rows."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from sgcache.serve.browse.session import COOKIE, SECRET_FILE, Sessions, load_secret

from .conftest import ADMIN, PASSWORD, World, sign_in, wait_for

PAGES = ["/browse", "/browse/", "/browse/Shot", "/browse/Shot?sort=-code&page=2", "/browse/Shot/1",
         "/browse/HumanUser/1", "/browse/NoSuchType"]


def _refused(r: httpx.Response) -> bool:
    """Nothing of the cache in the answer: a redirect to the sign-in page, or a bare refusal."""
    if r.status_code == 303:
        return r.headers["location"].startswith("/browse/login")
    return r.status_code == 401 and not r.content.startswith(b"\x89PNG")


def _thumb_path(world: World) -> str:
    return f"/browse/thumb/Shot/{world.shot_id}"


def test_no_page_or_thumbnail_without_a_session(world: World) -> None:
    c = httpx.Client(base_url=world.cache.url)
    for path in [*PAGES, _thumb_path(world)]:
        r = c.get(path)
        assert _refused(r), (path, r.status_code, r.text[:200])
    assert c.get("/browse/Shot/not-an-id/x").status_code == 404  # nothing under /browse goes to the site
    # what a signed-in user gets there, for contrast
    s = sign_in(world.cache.url, *ADMIN)
    assert s.get("/browse/Shot").status_code == 200
    got = wait_for(lambda: s.get(_thumb_path(world)).status_code == 200 or None, "the thumbnail's local copy")
    assert got and s.get(_thumb_path(world)).content == world.thumb


def _cookie_from(key: bytes, login: str, issued_ago: float = 0) -> str:
    class Old(URLSafeTimedSerializer):  # signs as if `issued_ago` seconds had passed
        def __init__(self) -> None:
            super().__init__(key, salt="sgcache.browse.session")
            import time as _t

            class _S(self.signer):  # type: ignore[name-defined, misc]
                def get_timestamp(s) -> int:  # noqa: N805
                    return int(_t.time() - issued_ago)
            self.signer = _S
    return Old().dumps({"u": login, "t": 0, "c": "x"})


def test_forged_altered_and_expired_cookies_are_refused(world: World) -> None:
    key = (world.data_dir / SECRET_FILE).read_bytes()
    good = _cookie_from(key, ADMIN[0])
    forged = _cookie_from(b"not-the-data-dirs-key-" * 3, ADMIN[0])
    expired = _cookie_from(key, ADMIN[0], issued_ago=13 * 3600)  # past the 12 h default
    altered = good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB")
    for name, value, ok in [("good", good, True), ("forged", forged, False), ("expired", expired, False),
                            ("altered", altered, False), ("garbage", "x.y.z", False)]:
        c = httpx.Client(base_url=world.cache.url, cookies={COOKIE: value})
        for path in ["/browse/Shot", _thumb_path(world)]:
            r = c.get(path)
            if ok:
                assert r.status_code in (200, 404), (name, path, r.status_code)
            else:
                assert _refused(r), (name, path, r.status_code)


def test_the_signing_key_is_private_to_the_data_dirs_owner(world: World) -> None:
    mode = stat.S_IMODE((world.data_dir / SECRET_FILE).stat().st_mode)
    assert mode == 0o600


def test_sign_in_needs_the_forms_token_and_the_right_password(world: World) -> None:
    c = httpx.Client(base_url=world.cache.url)
    r = c.post("/browse/login", data={"login": ADMIN[0], "password": ADMIN[1]})  # a cross-site form: no token
    assert r.status_code == 400 and COOKIE not in r.cookies
    page = c.get("/browse/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = c.post("/browse/login", data={"login": ADMIN[0], "password": ADMIN[1], "csrf": token},
               headers={"origin": "http://evil.example"})
    assert r.status_code == 400 and COOKIE not in r.cookies
    wrong = "Wr0ng-pa55word-xyzzy"
    r = c.post("/browse/login", data={"login": ADMIN[0], "password": wrong, "csrf": token})
    assert r.status_code == 401 and COOKIE not in r.cookies
    assert "did not accept" in r.text
    assert wrong not in r.text  # the password is never echoed back
    r = c.post("/browse/login", data={"login": ADMIN[0], "password": ADMIN[1], "csrf": token,
                                      "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/browse"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Path=/browse" in cookie
    assert ADMIN[1] not in cookie
    log = world.cache.log.read_text() if world.cache.log else ""
    assert "browser sign-in: admin" in log  # who signed in is logged, their passwords never
    assert wrong not in log and ADMIN[1] not in log


def test_sign_out_needs_the_sessions_token(world: World) -> None:
    s = sign_in(world.cache.url, *ADMIN)
    r = s.post("/browse/logout", data={})  # a cross-site form cannot know the token
    assert r.status_code == 400
    assert s.get("/browse/Shot").status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', s.get("/browse").text).group(1)  # type: ignore[union-attr]
    r = s.post("/browse/logout", data={"csrf": token})
    assert r.status_code == 303
    assert _refused(s.get("/browse/Shot"))


def _row_ids(html: str) -> set[int]:
    body = html.split('<table id="rows">', 1)[1].split("</table>", 1)[0]
    return {int(i) for i in re.findall(r'<td class="id"><a href="/browse/\w+/(\d+)"', body)}


def test_a_vendor_sees_only_what_the_site_shows_them(world: World) -> None:
    if len(world.vendors) < 2:
        pytest.skip("the demo has fewer than two vendors")
    a, b = world.vendors
    site_a = world.site.sg(login=a, password=PASSWORD, script_name=None, api_key=None)
    site_b = world.site.sg(login=b, password=PASSWORD, script_name=None, api_key=None)
    mine = {t["id"] for t in site_a.find("Task", [], ["id"])}
    theirs = {t["id"] for t in site_b.find("Task", [], ["id"])} - mine
    everyone = {t["id"] for t in world.site.sg().find("Task", [], ["id"])}
    assert len(mine) < len(everyone)  # the vendor group does restrict
    s = sign_in(world.cache.url, a, PASSWORD)
    shown: set[int] = set()
    page = 1
    while True:
        r = s.get(f"/browse/Task?page={page}")
        assert r.status_code == 200
        shown |= _row_ids(r.text)
        if 'id="next"' not in r.text:
            break
        page += 1
    assert shown == mine
    assert not shown & theirs
    for tid in sorted(theirs)[:3]:  # another vendor's task, asked for by address
        r = s.get(f"/browse/Task/{tid}")
        assert r.status_code == 404 and 'id="fields"' not in r.text



def test_a_group_the_policy_leaves_to_the_site_is_told_so_not_shown_everything(world: World) -> None:
    if not world.managers:
        pytest.skip("the demo has no Manager")
    s = sign_in(world.cache.url, world.managers[0], PASSWORD)
    r = s.get("/browse/Shot")
    assert r.status_code == 200
    assert "answered by the site only" in r.text and "(Manager)" in r.text
    assert not _row_ids(r.text)
    assert "answered by the site only" in s.get(f"/browse/Shot/{world.shot_id}").text
    assert s.get(f"/browse/thumb/Shot/{world.shot_id}").status_code == 404


def test_the_session_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    sessions = Sessions(load_secret(tmp_path), 3600)
    for scheme, secure in (("https", True), ("http", False)):
        req = Request({"type": "http", "scheme": scheme, "method": "POST", "path": "/browse/login",
                       "headers": [], "query_string": b"", "server": ("cache", 443)})
        resp = Response()
        sessions.start(resp, req, "someone")
        assert ("secure" in resp.headers["set-cookie"].lower()) is secure
    assert sessions.read(Request({"type": "http", "headers": [(b"cookie", f"{COOKIE}={sessions.issue('a')}".encode())],
                                  "method": "GET", "path": "/", "query_string": b""})).login == "a"  # type: ignore[union-attr]
