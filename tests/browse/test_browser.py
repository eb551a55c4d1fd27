"""A person at headless Chromium: signs in, filters and sorts a type page, pages through,
opens an entity with its thumbnail, signs out and in again, with the site in a full outage
for most of it; we read what the browser shows and compare it with the site's own answers.

With SGCACHE_UPDATE_SCREENSHOTS=1 the run also refreshes the README's screenshots
(docs/img/browse-type.png, docs/img/browse-entity.png) from the demo data it shows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from .chromium import Browser, require_browser
from .conftest import ADMIN, World, sign_in, wait_for

IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    require_browser()
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def _outage(world: World, seconds: float) -> None:
    r = httpx.post(world.site.admin_url + "/faults", content=json.dumps({"outage": seconds}), timeout=5)
    assert r.status_code == 200, r.text


def _select(b: Browser, row: int, name: str, value: str) -> None:
    assert b.js(f"(() => {{ const e = document.querySelectorAll('.filter')[{row}].querySelector('[name={name}]');"
                f" e.value = {json.dumps(value)}; return e.value === {json.dumps(value)}; }})()"), (name, value)


def test_signing_in_filtering_sorting_paging_and_a_thumbnail_through_an_outage(
        world: World, browser: Browser, tmp_path: Path) -> None:
    b, url, sg = browser, world.cache.url, world.site.sg()
    ip_desc = [s["code"] for s in sg.find("Shot", [["sg_status_list", "is", "ip"]], ["code"],
                                          order=[{"field_name": "code", "direction": "desc"}])]
    tasks = [t["id"] for t in sg.find("Task", [], ["id"], order=[{"field_name": "id", "direction": "asc"}])]
    assert len(tasks) > 100 and len(ip_desc) > 1
    shot = sg.find_one("Shot", [["id", "is", world.shot_id]], ["code", "sg_sequence", "project"])
    admin = sign_in(url, *ADMIN)  # the local copy of the thumbnail is there before the outage
    wait_for(lambda: admin.get(f"/browse/thumb/Shot/{world.shot_id}").status_code == 200, "the thumbnail")

    # Not signed in: any page leads to the sign-in form, and back after it.
    b.goto(url + "/browse/Shot")
    assert "/browse/login" in b.url and b.text("h1") == "Sign in"
    assert b.text("#site") == world.site.url
    b.fill("#login", ADMIN[0])
    b.fill("#password", ADMIN[1])
    b.click("#sign-in")
    assert b.url == url + "/browse/Shot"
    assert b.text("#who") == ADMIN[0]
    assert b.js("document.scripts.length") == 0  # pages work without JavaScript: they have none
    b.click("a.home")  # the cached types with their counts, in the site's words
    counts = dict(zip(b.texts("#types tbody td:first-child"), b.texts("#types tbody td:last-child")))
    assert counts["Shot"] == f"{len(sg.find('Shot', [], ['id'])):,}"
    assert counts["Person"] == f"{len(sg.find('HumanUser', [], ['id'])):,}"  # HumanUser's display name

    # The site goes down; the browser keeps working from the cache, and says so.
    _outage(world, 600)
    try:
        def banner_down() -> bool:
            b.goto(url + "/browse/Shot")
            return "unreachable" in b.text("#site-state")
        wait_for(banner_down, "the banner to report the outage")
        assert b.text("#data-age").startswith("Data as of event #") and " ago)" in b.text("#data-age")

        # Filter with the form (Status is ip), then sort by clicking the column twice.
        _select(b, 0, "f", "sg_status_list")
        _select(b, 0, "op", "is")
        b.fill(".filter [name=v]", "ip")
        b.click("#apply")
        assert b.text("#count").startswith(f"{len(ip_desc)} Shot record")
        b.click("th a.sort[href*='sort=code']")
        b.click("th a.sort[href*='sort=-code']")
        assert "sort=-code" in b.url and "▼" in b.text("#rows thead")
        codes = b.texts("#rows tbody tr td:nth-child(2)")
        assert codes == ip_desc
        assert set(b.texts("#rows tbody tr td:nth-child(3)")) == {"ip"}
        if os.environ.get("SGCACHE_UPDATE_SCREENSHOTS"):
            b.goto(url + "/browse/Shot?sort=code")
            b.screenshot(tmp_path / "browse-type.png")

        # Paging: the second page of Tasks is the site's second fifty by id.
        b.goto(url + "/browse/Task")
        assert b.text("#count") == f"{len(tasks)} Task records · page 1 of {-(-len(tasks) // 50)}"
        b.click("#next")
        assert "page=2" in b.url
        ids = [int(i) for i in b.texts("#rows tbody tr td.id a")]
        assert ids == tasks[50:100]
        b.click("#prev")
        assert [int(i) for i in b.texts("#rows tbody tr td.id a")] == tasks[:50]

        # An entity: its fields, links as links, its thumbnail from the local copy, the site's page.
        b.goto(url + "/browse/Shot")
        b.click(f"#rows a[href='/browse/Shot/{world.shot_id}']")
        assert b.text("#title") == shot["code"]
        assert b.js("document.querySelector('#thumbnail').naturalWidth") == 320
        assert b.js("document.querySelector('#thumbnail').complete")
        seq = b.js("document.querySelector('td[data-field=sg_sequence] a').getAttribute('href')")
        assert seq == f"/browse/Sequence/{shot['sg_sequence']['id']}"
        assert b.js("document.querySelector('#site-link').href") == f"{world.site.url}/detail/Shot/{world.shot_id}"
        assert "Task · Link" in b.text("main")  # back-references: the Tasks of this Shot
        if os.environ.get("SGCACHE_UPDATE_SCREENSHOTS"):
            b.screenshot(tmp_path / "browse-entity.png")
        b.click("td[data-field=sg_sequence] a")
        assert b.text("#title") == shot["sg_sequence"]["name"]
        assert str(shot["code"]) in b.text("main")  # the Sequence lists this Shot

        # Signing out ends the session; signing in again while the site is down works
        # within the outage grace (the password was verified recently), a wrong one does not.
        b.click("#sign-out")
        assert "/browse/login" in b.url
        b.goto(url + "/browse/Shot")
        assert "/browse/login" in b.url
        b.fill("#login", ADMIN[0])
        b.fill("#password", "not-the-password")
        b.click("#sign-in")
        assert "cannot be reached" in b.text("#error")
        b.fill("#password", ADMIN[1])
        b.click("#sign-in")
        assert b.text("#who") == ADMIN[0] and "unreachable" in b.text("#site-state")
    finally:
        _outage(world, 0)
    b.goto(url + "/browse")
    wait_for(lambda: (b.goto(url + "/browse"), "reachable" == b.text("#site-state").split()[-1])[1],
             "the banner to see the site back")
    b.click("#sign-out")
    b.goto(url + f"/browse/thumb/Shot/{world.shot_id}")
    assert b.js("document.contentType") != "image/png"

    if os.environ.get("SGCACHE_UPDATE_SCREENSHOTS"):
        IMG.mkdir(parents=True, exist_ok=True)
        for name in ("browse-type.png", "browse-entity.png"):
            shutil.copy(tmp_path / name, IMG / name)


def test_pages_fit_a_phone_screen(world: World, tmp_path: Path) -> None:
    require_browser()
    b = Browser(tmp_path / "phone", width=390, height=844)
    try:
        b.goto(world.cache.url + "/browse/login")
        b.fill("#login", ADMIN[0])
        b.fill("#password", ADMIN[1])
        b.click("#sign-in")
        for path in ["/browse", "/browse/Shot", f"/browse/Shot/{world.shot_id}"]:
            b.goto(world.cache.url + path)
            # the page itself never scrolls sideways; wide tables scroll inside their box
            assert b.js("document.documentElement.scrollWidth") <= 390, path
    finally:
        b.close()
