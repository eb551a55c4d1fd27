"""A demo studio with people who can sign in, a Shot with a real thumbnail, and a primed cache."""

from __future__ import annotations

import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from sgcache.mock.demo import generate

from ..cache.dbs import BACKENDS, new_db_url
from ..e2e.harness import Cache, Site, start_cache, start_site

ADMIN = ("admin", "admin-secret-1")
PASSWORD = "vendor-secret-1"


def png(width: int, height: int) -> bytes:
    """A real PNG (a colour gradient), so the browser has an image to decode and size."""
    rows = b"".join(b"\0" + bytes(v for x in range(width) for v in
                                  (40 + 180 * x // width, 90 + 100 * y // height, 160, 255)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def logins_of(size: int, group: str) -> list[str]:
    """Logins of the demo's active users in a permission group (the demo is deterministic)."""
    rule_sets = {r["id"]: r["code"] for t, r in generate(size) if t == "PermissionRuleSet"}
    return [r["login"] for t, r in generate(size) if t == "HumanUser" and r.get("sg_status_list") == "act"
            and rule_sets.get((r.get("permission_rule_set") or {}).get("id")) == group]


@dataclass
class World:
    site: Site
    cache: Cache
    shot_id: int  # a Shot with a thumbnail uploaded on the site
    thumb: bytes
    vendors: list[str]
    managers: list[str]  # a group the default policy leaves to the site
    data_dir: Path


@pytest.fixture(scope="package", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The studio, its cache on SQLite, then on PostgreSQL (when SGCACHE_TEST_PG_URL is set)."""
    size = 300
    tmp = tmp_path_factory.mktemp("browse")
    dbs = new_db_url(request.param, tmp)
    db_url = next(dbs)
    vs = logins_of(size, "Vendor")[:2]
    ms = logins_of(size, "Manager")[:1]
    users = [f"{ADMIN[0]}:{ADMIN[1]}", *(f"{v}:{PASSWORD}" for v in vs + ms)]
    site = start_site(*(a for u in users for a in ("--human-user", u)), demo=size)
    cache = None
    try:
        sg = site.sg()
        shot = sg.find_one("Shot", [["sg_status_list", "is", "ip"]], ["code"], order=[{"field_name": "id",
                                                                                        "direction": "asc"}])
        thumb = png(320, 180)
        (tmp / "thumb.png").write_bytes(thumb)
        sg.upload_thumbnail("Shot", shot["id"], str(tmp / "thumb.png"))
        data = tmp / "data"
        data.mkdir()
        cache = start_cache(site, db_url, data, SGCACHE_POLL_INTERVAL="0.5",
                            SGCACHE_THUMBNAIL_INTERVAL="0.5", SGCACHE_THUMBNAIL_HOSTS="127.0.0.1",
                            SGCACHE_THUMBNAIL_CACHE_MB="64",
                            SGCACHE_OUTAGE_IMAGES="local",
                            SGCACHE_AUTH_TTL="2")
        yield World(site, cache, shot["id"], thumb, vs, ms, data)
    finally:
        if cache is not None:
            cache.stop()
        site.stop()
        dbs.close()  # drops a PostgreSQL database


def sign_in(url: str, login: str, password: str) -> httpx.Client:
    """An HTTP client signed in the way the form does it (CSRF token from the page)."""
    c = httpx.Client(base_url=url, timeout=30)
    page = c.get("/browse/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    r = c.post("/browse/login", data={"login": login, "password": password, "csrf": token.group(1)})
    assert r.status_code == 303, r.text[:500]
    return c


def wait_for(check: Callable[[], object], what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
