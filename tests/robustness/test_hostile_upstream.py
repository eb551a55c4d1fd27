"""Callers cannot take the cache's line to the site, fake an outage, or share cookies.

Real processes on loopback: the mock site, `sgcache serve`, and raw sockets playing an
attacker with no credentials who starts uploads (`/upload/...`, streamed to the site)
and trickles their bodies a byte at a time. Issue 11, findings 1-3:

1. the cache's own calls (verifying a new caller, the event watcher) and callers' api3
   calls go on while every transfer connection is held; trickled bodies are cut off;
   one address cannot take every transfer connection;
2. a key revoked on the site is not let back in by the auth grace period when only
   callers' traffic fails (the site itself answers the cache);
3. a `Set-Cookie` from the site goes back to the caller it answers, and nowhere else.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import shotgun_api3
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..e2e.harness import Cache, Site, free_port
from .conftest import OTHER_SCRIPT, _prime
from .servers import Primed, rpc, serve

#: More uploads than the one shared pool of 100 connections the cache had before.
FLOOD = 120
TIMEOUT = 3.0
SHOTS = ("Shot", [], ["code"])
#: A read the cache always passes through (time-relative filter).
PASSED_THROUGH = {"type": "Shot", "return_fields": ["code"], "filters": {
    "logical_operator": "and", "conditions": [
        {"path": "created_at", "relation": "in_last", "values": [3, "DAY"]}]}}


class SlowUploads:
    """`n` uploads whose bodies trickle in a byte a second, from `address` (X-Forwarded-For)."""

    def __init__(self, url: str, n: int, address: str | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.socks: list[socket.socket] = []
        self.answers: dict[int, bytes] = {}  # socket index -> what the server sent (b"" if closed)
        xff = f"X-Forwarded-For: {address}\r\n" if address else ""
        head = (f"POST /upload/upload_file HTTP/1.1\r\nHost: {host}:{port}\r\n{xff}"
                "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n").encode()
        for _ in range(n):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(head + b"-")
            self.socks.append(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(1.0):
            live = [i for i in range(len(self.socks)) if i not in self.answers]
            for i in live:
                try:
                    self.socks[i].send(b"-")
                except OSError:
                    self.answers[i] = b""
            readable, _, _ = select.select([self.socks[i] for i in live if i not in self.answers], [], [], 0)
            for s in readable:
                i = self.socks.index(s)
                try:
                    self.answers[i] = s.recv(4096)
                except OSError:
                    self.answers[i] = b""

    def answered(self) -> int:
        """How many of the uploads the server has answered or cut off."""
        return len(self.answers)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


@pytest.fixture
def own_primed(site: Site, tmp_path: Path) -> Primed:
    """A cache database of its own (these caches run the sync loop, which takes the leader lock)."""
    return _prime(site, f"sqlite:///{tmp_path / 'hostile.sqlite'}", tmp_path)


@pytest.fixture
def flood() -> Iterator[list[SlowUploads]]:
    floods: list[SlowUploads] = []
    yield floods
    for f in floods:
        f.close()


def upload(cache: Cache, site: Site) -> httpx.Response:
    """A 2 MB upload at loopback pace, missing the entity fields the site wants."""
    return httpx.post(cache.url + "/upload/upload_file", files={"file": ("a.bin", b"x" * 2_000_000)},
                      data={"script_name": site.script_name, "script_key": site.script_key}, timeout=30)


def assert_site_answers_an_upload(cache: Cache, site: Site) -> None:
    r = upload(cache, site)
    assert r.status_code not in (408, 502, 503), r.text  # the site's answer, not the cache's refusal
    assert r.text.startswith("0\n") and "sgcache" not in r.text, r.text


def _new_code() -> str:
    return f"hostile_{int(time.time() * 1000) % 10**9}"


# -- finding 1 --------------------------------------------------------------------------
def test_slow_uploads_do_not_hold_up_the_caches_own_calls(site: Site, own_primed: Primed,
                                                          flood: list[SlowUploads]) -> None:
    cache = serve(own_primed, upstream_timeout=TIMEOUT, upstream_connect_timeout=TIMEOUT, poll_interval=0.3,
                  upstream_transfer_connections=16, transfer_per_client=0, transfer_timeout=120)
    try:
        sg = cache.sg(site)
        project = sg.find_one("Shot", [["project", "is_not", None]], ["project"])["project"]
        flood.append(SlowUploads(cache.url, FLOOD))
        time.sleep(2)  # every upload has reached the site's side by now
        # A caller this cache never saw is verified against the site, promptly.
        t0 = time.monotonic()
        stranger = cache.sg(site, script_name=OTHER_SCRIPT[0], api_key=OTHER_SCRIPT[1])
        assert stranger.find(*SHOTS)
        assert time.monotonic() - t0 < TIMEOUT
        # The event watcher still follows the site: a change made there shows up.
        code = _new_code()
        new = site.sg().create("Shot", {"code": code, "project": project})
        deadline = time.monotonic() + 15
        found = None
        while time.monotonic() < deadline and not found:
            found = sg.find_one("Shot", [["id", "is", new["id"]]], ["code"])
            time.sleep(0.3)
        assert found and found["code"] == code
        # Callers' api3 calls passed through (writes among them) have connections of their own.
        auth = {"script_name": site.script_name, "script_key": site.script_key}
        t0 = time.monotonic()
        assert "results" in rpc(cache.url, "read", auth, PASSED_THROUGH).json()
        assert time.monotonic() - t0 < TIMEOUT
        # And nobody is told the site is down.
        assert rpc(cache.url, "info").json()["sgcache"]["status"] == "ok"
    finally:
        cache.stop()


def test_a_trickled_upload_body_is_cut_off(site: Site, primed: Primed, flood: list[SlowUploads]) -> None:
    cache = serve(primed, "--no-sync", upstream_timeout=TIMEOUT, upstream_connect_timeout=TIMEOUT,
                  upstream_transfer_connections=8, transfer_per_client=0, transfer_timeout=2,
                  transfer_min_rate=1000)
    try:
        uploads = SlowUploads(cache.url, 12)
        flood.append(uploads)
        deadline = time.monotonic() + 10
        while uploads.answered() < 12 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert uploads.answered() == 12
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in uploads.answers.values())
        # The connections they held are free again, and an upload at a normal pace goes
        # through (the site answers it: here its own refusal of the missing fields).
        assert_site_answers_an_upload(cache, site)
    finally:
        cache.stop()


def test_one_address_cannot_take_every_transfer_connection(site: Site, primed: Primed,
                                                              flood: list[SlowUploads]) -> None:
    cache = serve(primed, "--no-sync", upstream_timeout=TIMEOUT, upstream_connect_timeout=TIMEOUT,
                  upstream_transfer_connections=16, transfer_per_client=4, transfer_timeout=120)
    try:
        # One address behind a trusted proxy (uvicorn takes X-Forwarded-For from loopback).
        uploads = SlowUploads(cache.url, FLOOD, address="10.66.0.1")
        flood.append(uploads)
        time.sleep(2)
        refused = [a for a in uploads.answers.values() if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == FLOOD - 4
        t0 = time.monotonic()
        assert_site_answers_an_upload(cache, site)  # from another address
        assert time.monotonic() - t0 < TIMEOUT
    finally:
        cache.stop()


# -- finding 2 --------------------------------------------------------------------------
def test_a_revoked_key_is_not_let_in_by_callers_timeouts(site: Site, tmp_path: Path,
                                                         flood: list[SlowUploads]) -> None:
    # A script in a group the cache answers locally (API Admin), known to the cache.
    name, key = f"hostile_revoked_{_new_code()}", "revoked-key-5e6f7a"
    group = site.sg().find_one("PermissionRuleSet", [["code", "is", "API Admin"]], ["id"])
    script = site.sg().create("ApiUser", {"firstname": name, "salted_password": key, "permission_rule_set": group})
    primed = _prime(site, f"sqlite:///{tmp_path / 'revoked.sqlite'}", tmp_path)
    cache = serve(primed, "--no-sync", upstream_timeout=TIMEOUT, upstream_connect_timeout=TIMEOUT,
                  auth_ttl=1, auth_grace=3600, upstream_transfer_connections=8,
                  transfer_per_client=0, transfer_timeout=120)
    try:
        revoked = cache.sg(site, script_name=name, api_key=key, connect=False)
        assert revoked.find(*SHOTS)  # verified while the key is good
        site.sg().delete("ApiUser", script["id"])  # revoked on the site
        # The fake outage: every transfer connection held, then one more upload fails.
        flood.append(SlowUploads(cache.url, FLOOD))
        time.sleep(1.5)  # past the TTL, well within the grace period
        assert upload(cache, site).status_code == 502  # a caller's call failed...
        with pytest.raises(shotgun_api3.AuthenticationFault):  # ...the site still refuses the key
            revoked.find(*SHOTS)
        # A good key is still verified and served meanwhile.
        assert cache.sg(site, script_name=OTHER_SCRIPT[0], api_key=OTHER_SCRIPT[1], connect=False).find(*SHOTS)
    finally:
        cache.stop()


# -- finding 3 --------------------------------------------------------------------------
class CookieSite:
    """A site that sets cookies, on loopback, in front of the mock site (which the cache is
    primed from through it): api3 calls of scripts "alice", "bob" and "carol" are answered
    here, and alice's set two cookies; `GET /login` sets one. Every Cookie header it gets
    is recorded."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.seen: list[tuple[str, str | None]] = []  # (who, Cookie header)
        app = Starlette(routes=[
            Route("/api3/json", self.api3, methods=["POST"]),
            Route("/login", self.login, methods=["GET"]),
            Route("/upload/upload_file", self.upload, methods=["POST"]),
            Route("/whoami/{who}", self.whoami, methods=["GET"]),
        ])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    async def api3(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        auth = body["params"][0] if body.get("params") else {}
        who = auth.get("script_name", "?") if isinstance(auth, dict) else "?"
        self.seen.append((who, request.headers.get("cookie")))
        if who not in ("alice", "bob", "carol"):  # the cache's own calls: the mock answers
            async with httpx.AsyncClient() as client:
                r = await client.post(self.site.url + "/api3/json", content=raw,
                                      headers={"content-type": "application/json"}, timeout=60)
            return Response(r.content, status_code=r.status_code, media_type="application/json")
        resp = JSONResponse({"results": {"type": "Shot", "data_type": {"value": "text"}}})
        if who == "alice":
            resp.set_cookie("_session_id", "alice-secret-1")
            resp.set_cookie("csrf_token", "alice-csrf-2")
        return resp

    async def login(self, request: Request) -> Response:
        self.seen.append(("browser-login", request.headers.get("cookie")))
        resp = PlainTextResponse("logged in")
        resp.set_cookie("_session_id", "browser-secret-3")
        return resp

    async def upload(self, request: Request) -> Response:
        """An upload form's short text answer, setting two cookies (it names no entity,
        so nothing is written through)."""
        await request.body()
        resp = PlainTextResponse("1\n")
        resp.set_cookie("_session_id", "upload-secret-4")
        resp.set_cookie("csrf_token", "upload-csrf-5")
        return resp

    async def whoami(self, request: Request) -> Response:
        self.seen.append((request.path_params["who"], request.headers.get("cookie")))
        return PlainTextResponse("ok")

    def cookies_of(self, who: str) -> list[str | None]:
        return [c for w, c in self.seen if w == who]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def cookie_site(site: Site) -> Iterator[CookieSite]:
    s = CookieSite(site)
    yield s
    s.stop()


def test_site_cookies_go_back_to_their_caller_only(site: Site, cookie_site: CookieSite, tmp_path: Path) -> None:
    through = Site(cookie_site.url, site.admin_url, site.script_name, site.script_key, site.proc)
    cache = serve(_prime(through, f"sqlite:///{tmp_path / 'cookies.sqlite'}", tmp_path), "--no-sync")
    try:
        def call(script: str, **kw: Any) -> httpx.Response:
            return httpx.post(cache.url + "/api3/json", timeout=10, **kw, json={
                "method_name": "schema_field_read",
                "params": [{"script_name": script, "script_key": "k"}, {"type": "Shot", "field_name": "code"}]})

        # Alice's call sets two cookies: both come back to her, each on its own header.
        r = call("alice")
        assert sorted(c.split(";")[0] for c in r.headers.get_list("set-cookie")) == [
            "_session_id=alice-secret-1", "csrf_token=alice-csrf-2"]
        # A browser logs in on a raw path: its cookie comes back to it.
        r = httpx.get(cache.url + "/login", timeout=10)
        assert r.headers["set-cookie"].startswith("_session_id=browser-secret-3")
        # An upload's answer (written through before it is sent) keeps its two cookies apart too.
        r = httpx.post(cache.url + "/upload/upload_file", data={"display_name": "x"}, timeout=10)
        assert r.text == "1\n"
        assert sorted(c.split(";")[0] for c in r.headers.get_list("set-cookie")) == [
            "_session_id=upload-secret-4", "csrf_token=upload-csrf-5"]
        # Bob sends no cookies, on api3 and on raw paths: the site gets none from him.
        call("bob")
        httpx.get(cache.url + "/whoami/bob", timeout=10)
        assert cookie_site.cookies_of("bob") == [None, None]
        # The browser's own cookie goes with its own request, and only its own.
        httpx.get(cache.url + "/whoami/browser", headers={"cookie": "_session_id=browser-secret-3"}, timeout=10)
        assert cookie_site.cookies_of("browser") == ["_session_id=browser-secret-3"]
        call("carol")
        assert cookie_site.cookies_of("carol") == [None]
    finally:
        cache.stop()
