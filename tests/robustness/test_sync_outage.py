"""The sync rides out a site outage and catches up when the site returns.

`sgcache serve` with its sync loop on its own database: the site goes down for a few
polls (and then flaky), the cache keeps answering, and a write made on the site
after it returns is served by the cache shortly after.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..e2e.harness import Site
from .conftest import _prime
from .servers import serve


def test_sync_catches_up_after_an_outage(site: Site, tmp_path: Path) -> None:
    primed = _prime(site, f"sqlite:///{tmp_path / 'sync.sqlite'}", tmp_path)
    cache = serve(primed, upstream_timeout=2, poll_interval=0.3, auth_ttl=1)
    try:
        sg = cache.sg(site)
        before = sg.find("Shot", [], ["code"])
        project = sg.find_one("Shot", [["project", "is_not", None]], ["project"])["project"]
        httpx.post(site.admin_url + "/faults", json={"reset": True, "outage": 3}, timeout=5)
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:  # cached reads carry on while the sync fails
            assert sg.find("Shot", [], ["code"]) == before
            time.sleep(0.2)
        httpx.post(site.admin_url + "/faults", json={"reset": True, "error_rate": 0.3, "seed": 3}, timeout=5)
        code = f"robust_sync_{int(time.time() * 1000) % 10**8}"
        for _ in range(20):  # the site is flaky now: the test's own write may need a retry
            try:
                new = site.sg().create("Shot", {"code": code, "project": project})
                break
            except Exception:
                time.sleep(0.2)
        deadline = time.monotonic() + 30
        found = None
        while time.monotonic() < deadline and not found:
            found = sg.find_one("Shot", [["id", "is", new["id"]]], ["code"])
            time.sleep(0.3)
        assert found and found["code"] == code
    finally:
        httpx.post(site.admin_url + "/faults", json={"reset": True}, timeout=5)
        cache.stop()
