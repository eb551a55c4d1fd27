"""Coalesced reads: identical concurrent reads share one site call (or one local answer),
and only when that is safe: never across credentials, never an answer older than the
caller's own write.

A slow site on loopback sits in front of the mock: it answers a held call at once from
the mock (the answer is the site's state *then*) and sends it back `HOLD` seconds later,
so a write can land while an older read is still on its way. It counts every call. It can
also hold the check of one person's credentials, so that reads the cache answers itself
stay in flight while others arrive.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .harness import Cache, Site, free_port, start_cache, start_site

HOLD = 1.5
SLOW = {"logical_operator": "and", "conditions": [
    {"path": "created_at", "relation": "in_last", "values": [36500, "DAY"]}]}  # time-relative: passed through


class SlowSite:
    """The mock, with time-relative reads and `schema_field_read` held back `HOLD` s after
    they are answered, and every api3 call recorded as (method, credentials, held)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.calls: list[tuple[str, str, bool]] = []
        self.hold_checks_of: str | None = None  # a login: the cache's checks of its credentials are held
        app = Starlette(routes=[Route("/{rest:path}", self.relay, methods=["GET", "POST", "PUT"])])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    async def relay(self, request: Request) -> Response:
        raw = await request.body()
        held = False
        if request.url.path == "/api3/json":
            body = json.loads(raw)
            auth = body["params"][0] if body.get("params") else {}
            p = body["params"][1] if len(body.get("params", [])) > 1 else {}
            held = body["method_name"] == "schema_field_read" or (
                body["method_name"] == "read" and p.get("filters") == SLOW)
            method = body["method_name"]
            if self.hold_checks_of and auth.get("sudo_as_login") == self.hold_checks_of and p.get("filters") == CHECK:
                held, method = True, "check"  # the cache verifying these credentials
            self.calls.append((method, json.dumps(auth, sort_keys=True), held))
        async with httpx.AsyncClient() as client:
            r = await client.request(request.method, self.site.url + request.url.path, content=raw,
                                     params=request.query_params, timeout=60,
                                     headers={"content-type": request.headers.get("content-type", "")})
        if held:
            await asyncio.sleep(HOLD)
        return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))

    def held(self, method: str = "read") -> list[str]:
        """Credentials of each held call the site got, in order."""
        return [who for m, who, h in self.calls if h and m == method]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    s = start_site(demo=300)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def slow(site: Site) -> Iterator[SlowSite]:
    s = SlowSite(site)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cache(site: Site, slow: SlowSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    tmp: Path = tmp_path_factory.mktemp("coalesce")
    through = Site(slow.url, site.admin_url, site.script_name, site.script_key, site.proc)
    c = start_cache(through, f"sqlite:///{tmp / 'cache.sqlite'}", tmp, "--no-sync", SGCACHE_COALESCE_WINDOW="1")
    yield c
    c.stop()


CHECK = {"logical_operator": "and", "conditions": [{"path": "id", "relation": "is", "values": [0]}]}
ALL_SHOTS = {"type": "Shot", "return_fields": ["code", "description"], "return_only": "active",
             "filters": {"logical_operator": "and", "conditions": []},
             "paging": {"entities_per_page": 500, "current_page": 1}}


def script(site: Site, **more: str) -> dict[str, str]:
    return {"script_name": site.script_name, "script_key": site.script_key, **more}


async def rpc(url: str, method: str, auth: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(url + "/api3/json", json={"method_name": method, "params": [auth, params]})
        assert r.status_code == 200
        return r.json()


def slow_read(fields: list[str], etype: str = "Shot") -> dict[str, Any]:
    return {"type": etype, "return_fields": fields, "filters": SLOW, "return_only": "active",
            "paging": {"entities_per_page": 500, "current_page": 1}}


def coalesced(cache: Cache, kind: str = "") -> float:
    text = httpx.get(cache.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sgcache_coalesced_total{") and (not kind or f'kind="{kind}"' in line))


def artists(site: Site) -> list[str]:
    """Logins of the site's Artists (the cache answers their Shot reads itself), last first."""
    users = asyncio.run(rpc(site.url, "read", script(site), {
        "type": "HumanUser", "return_fields": ["login", "permission_rule_set"],
        "paging": {"entities_per_page": 500, "current_page": 1}}))["results"]["entities"]
    return sorted((u["login"] for u in users if (u["permission_rule_set"] or {}).get("name") == "Artist"),
                  reverse=True)


def test_identical_concurrent_reads_make_one_site_call(site: Site, slow: SlowSite, cache: Cache) -> None:
    auth = script(site)
    params = slow_read(["code", "sg_status_list"])
    asyncio.run(rpc(cache.url, "read", auth, {**params, "filters": {"logical_operator": "and", "conditions": []}}))
    before, shared = len(slow.held()), coalesced(cache)

    async def stampede() -> list[dict[str, Any]]:
        return await asyncio.gather(*(rpc(cache.url, "read", auth, params) for _ in range(20)))
    answers = asyncio.run(stampede())
    assert len(slow.held()) - before == 1, "twenty identical reads, one call to the site"
    assert coalesced(cache) - shared == 19
    direct = asyncio.run(rpc(site.url, "read", auth, params))
    assert all(a == direct for a in answers) and direct["results"]["entities"]


def test_callers_with_other_credentials_never_share_an_answer(site: Site, slow: SlowSite, cache: Cache) -> None:
    users = asyncio.run(rpc(site.url, "read", script(site), {
        "type": "HumanUser", "return_fields": ["login", "permission_rule_set"],
        "paging": {"entities_per_page": 500, "current_page": 1}}))["results"]["entities"]
    role = {u["login"]: (u["permission_rule_set"] or {}).get("name") for u in users}
    admin = next(login for login, r in role.items() if r == "Admin")
    params = slow_read(["code", "project"])
    seen_by_admin = asyncio.run(rpc(site.url, "read", script(site, sudo_as_login=admin), params))
    artist = next(login for login, r in role.items() if r in ("Artist", "Vendor") and asyncio.run(
        rpc(site.url, "read", script(site, sudo_as_login=login), params)) != seen_by_admin)  # sees less
    callers = {"admin": script(site, sudo_as_login=admin), "artist": script(site, sudo_as_login=artist),
               "wrong key": {"script_name": site.script_name, "script_key": "not-the-key"}}
    schema = {"type": "Shot", "field_name": "code"}
    before_reads, before_schema, shared = len(slow.held()), len(slow.held("schema_field_read")), coalesced(cache)

    async def together() -> tuple[list[Any], list[Any]]:
        # Two of each caller at once: twins share a call, no one else does.
        reads = [rpc(cache.url, "read", callers[k], params) for k in ("admin", "artist") for _ in range(2)]
        schemas = [rpc(cache.url, "schema_field_read", callers[k], schema) for k in callers for _ in range(2)]
        return await asyncio.gather(*reads), await asyncio.gather(*schemas)
    reads, schemas = asyncio.run(together())
    assert len(slow.held()) - before_reads == 2, "one read per identity"
    assert len(slow.held("schema_field_read")) - before_schema == 3, "one schema call per credential"
    assert coalesced(cache) - shared == 5
    for i, who in enumerate(("admin", "artist")):
        mine = asyncio.run(rpc(site.url, "read", callers[who], params))
        assert reads[2 * i] == reads[2 * i + 1] == mine, f"{who} gets what the site shows {who}"
    assert reads[0]["results"]["entities"] != reads[2]["results"]["entities"], "the two users see different rows"
    # A caller who knows a script's name but not its key gets the site's refusal, never the answer.
    assert schemas[4]["exception"] is True and schemas[5]["exception"] is True
    assert "results" in schemas[0] and schemas[0] == schemas[1]


def test_a_read_after_a_write_never_gets_an_older_answer(site: Site, slow: SlowSite, cache: Cache) -> None:
    auth = script(site)
    shot = asyncio.run(rpc(site.url, "read", auth, {
        "type": "Shot", "return_fields": ["id"], "paging": {"entities_per_page": 1, "current_page": 1}}
    ))["results"]["entities"][0]["id"]
    params = slow_read(["description"])

    def mine(answer: dict[str, Any]) -> Any:
        return next(e["description"] for e in answer["results"]["entities"] if e["id"] == shot)

    async def update(text: str) -> None:
        r = await rpc(cache.url, "update", auth, {"type": "Shot", "id": shot, "fields": [
            {"field_name": "description", "value": text}]})
        assert "results" in r, r

    async def scenario() -> list[Any]:
        await update("before")
        # A read is answered by the site now ("before") but reaches the cache HOLD s later;
        # meanwhile the same caller writes "after", and reads again, twice at once.
        older = asyncio.ensure_future(rpc(cache.url, "read", auth, params))
        await asyncio.sleep(0.3)
        await update("after")
        again = await asyncio.gather(rpc(cache.url, "read", auth, params), rpc(cache.url, "read", auth, params))
        # The answer just received is kept for a moment; a write makes it too old for its caller.
        await update("after again")
        last = await rpc(cache.url, "read", auth, params)
        return [mine(await older), *map(mine, again), mine(last)]

    before, shared = len(slow.held()), coalesced(cache)
    assert asyncio.run(scenario()) == ["before", "after", "after", "after again"]
    assert len(slow.held()) - before == 3, "the reads after each write went to the site themselves"
    assert coalesced(cache) - shared == 1, "the two reads after the write shared their call"


def test_identical_concurrent_local_reads_share_one_answer(site: Site, slow: SlowSite, cache: Cache) -> None:
    who = artists(site)[0]
    auth = script(site, sudo_as_login=who)
    shared, checks = coalesced(cache, "local"), len(slow.held("check"))
    slow.hold_checks_of = who  # the first read waits HOLD s for its credentials: the rest arrive meanwhile
    try:
        async def stampede() -> list[dict[str, Any]]:
            return await asyncio.gather(*(rpc(cache.url, "read", auth, ALL_SHOTS) for _ in range(20)))
        answers = asyncio.run(stampede())
    finally:
        slow.hold_checks_of = None
    assert len(slow.held("check")) - checks == 1
    assert coalesced(cache, "local") - shared == 19, "answered by the cache once, for all twenty"
    direct = asyncio.run(rpc(site.url, "read", auth, ALL_SHOTS))
    assert all(a == direct for a in answers) and direct["results"]["entities"]


def test_a_local_read_after_a_write_never_joins_an_older_one(site: Site, slow: SlowSite, cache: Cache) -> None:
    who = artists(site)[1]
    auth = script(site, sudo_as_login=who)
    shot = asyncio.run(rpc(site.url, "read", auth, ALL_SHOTS))["results"]["entities"][0]["id"]

    def mine(answer: dict[str, Any]) -> Any:
        return next(e["description"] for e in answer["results"]["entities"] if e["id"] == shot)

    async def scenario() -> list[Any]:
        # A read that waits for its caller's credentials to be checked; meanwhile the caller
        # writes through the cache and reads the same again: that read must run on its own.
        older = asyncio.ensure_future(rpc(cache.url, "read", auth, ALL_SHOTS))
        await asyncio.sleep(0.3)
        r = await rpc(cache.url, "update", auth, {"type": "Shot", "id": shot, "fields": [
            {"field_name": "description", "value": "written while a read waited"}]})
        assert "results" in r, r
        again = await rpc(cache.url, "read", auth, ALL_SHOTS)
        return [mine(again), mine(await older)]

    shared, checks = coalesced(cache), len(slow.held("check"))
    slow.hold_checks_of = who
    try:
        seen = asyncio.run(scenario())
    finally:
        slow.hold_checks_of = None
    assert len(slow.held("check")) - checks == 1
    assert seen[0] == "written while a read waited"
    assert coalesced(cache) - shared == 0, "the read after the write did not join the one before it"
