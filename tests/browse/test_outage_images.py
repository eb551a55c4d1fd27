"""`SGCACHE_OUTAGE_IMAGES=local`: api3 reads of image fields during an outage get the local
copies' URLs (signed, expiring), the site's own URLs the rest of the time."""

from __future__ import annotations

import json

import httpx
import pytest
import shotgun_api3

from .conftest import ADMIN, World, sign_in, wait_for


def _outage(world: World, seconds: float) -> None:
    r = httpx.post(world.site.admin_url + "/faults", content=json.dumps({"outage": seconds}), timeout=5)
    assert r.status_code == 200, r.text


def test_image_fields_come_from_the_local_copies_only_while_the_site_is_down(world: World) -> None:
    url, sid = world.cache.url, world.shot_id
    sg = world.cache.sg(world.site)
    other = sg.find_one("Shot", [["id", "is_not", sid], ["image", "is", None]], ["id"])  # a Shot with no thumbnail
    assert other is not None
    fields = ["code", "image", "sg_status_list"]
    admin = sign_in(url, *ADMIN)
    wait_for(lambda: admin.get(f"/browse/thumb/Shot/{sid}").status_code == 200, "the local copy")

    up = sg.find_one("Shot", [["id", "is", sid]], fields)
    assert up["image"] and up["image"].startswith(world.site.url)  # the site's own URL, passed through
    expected = world.site.sg().find_one("Shot", [["id", "is", sid]], ["code", "sg_status_list"])

    _outage(world, 600)
    try:
        def local() -> dict | None:
            try:
                got = sg.find_one("Shot", [["id", "is", sid]], fields)
            except shotgun_api3.Fault:  # the site is not yet known to be down
                return None
            return got if got["image"] and got["image"].startswith(url + "/outage-image/") else None
        got = wait_for(local, "an image URL of the local copy")
        assert {k: got[k] for k in ("type", "id", "code", "sg_status_list")} == \
            {k: expected[k] for k in ("type", "id", "code", "sg_status_list")}
        image = httpx.get(got["image"], timeout=10)  # no credentials: the URL is the capability
        assert image.status_code == 200 and image.content == world.thumb
        assert image.headers["content-type"] == "image/png"

        # A row with no local copy reads null rather than failing the whole read.
        assert sg.find_one("Shot", [["id", "is", other["id"]]], fields)["image"] is None
        # A tampered link is refused; so is a filter on the image (only the site knows).
        token = got["image"].rsplit("/", 1)[1]
        assert httpx.get(f"{url}/outage-image/{token[:-2]}xx", timeout=10).status_code == 403
        with pytest.raises(shotgun_api3.Fault, match="unavailable"):
            sg.find("Shot", [["image", "is_not", None]], ["code"])
    finally:
        _outage(world, 0)

    def site_again() -> bool:
        try:
            return sg.find_one("Shot", [["id", "is", sid]], fields)["image"].startswith(world.site.url)
        except shotgun_api3.Fault:
            return False
    wait_for(site_again, "the site's URLs again after the outage")
