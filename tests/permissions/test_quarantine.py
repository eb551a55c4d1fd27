"""A policy that disagrees with the site's is caught by shadow reads and its group quarantined.

The cache is told the Artist group sees everything (`full`) while the site (the mock's
Artist role) shows Artists only their projects. Shadow verification (rate 1) asks the
site again as the Artist who read, finds the extra projects, and quarantines the Artist
group: from then on every Artist read goes to the site, while Admins and Vendors keep
their local answers, until an operator lifts it.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, create_engine

from sgcache.serve import group_quarantine as gq
from sgcache.store import quarantine as q
from tests.browse.conftest import logins_of, sign_in
from tests.cache.dbs import BACKENDS, new_db_url
from tests.e2e.harness import Cache, Site, sgcache, start_cache, start_site

from .conftest import POLICY

#: What the cache is told: Artists see everything. The site disagrees.
WRONG = {**POLICY, "Artist": {"policy": "full"}}
DEMO = 200
PASSWORD = "artist-secret-1"  # the Artists' (for the browser's sign-in)


@pytest.fixture(params=BACKENDS)
def site_and_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Site, Cache]]:
    site = start_site(*(a for u in logins_of(DEMO, "Artist") for a in ("--human-user", f"{u}:{PASSWORD}")), demo=DEMO)
    try:
        for url in new_db_url(request.param, tmp_path):
            cache = start_cache(site, url, tmp_path, "--no-sync", SGCACHE_AUTH_TTL="86400",
                                SGCACHE_PERMISSIONS=json.dumps(WRONG), SGCACHE_SHADOW_RATE="1",
                                SGCACHE_SHADOW_BUDGET="100")
            try:
                yield site, cache
            finally:
                cache.stop()
    finally:
        site.stop()


def _status(cache: Cache) -> dict[str, Any]:
    return httpx.get(cache.url + "/status.json", timeout=30).json()


def _counts(cache: Cache) -> tuple[int, int]:
    """Reads answered by the cache, and passed through (the client's `info` calls left out)."""
    n = {"served": 0.0, "passthrough": 0.0}
    for line in httpx.get(cache.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("sgcache_requests_total{") and 'method="read"' in line:
            for k in n:
                if f'outcome="{k}"' in line:
                    n[k] += float(line.rsplit(" ", 1)[1])
    return int(n["served"]), int(n["passthrough"])


def _wait_for(cache: Cache, cond: Any, what: str) -> dict[str, Any]:
    """The status once `cond(status)` holds: the shadow calls run in the background."""
    deadline = time.monotonic() + 60
    while True:
        st = _status(cache)
        if cond(st):
            return st
        assert time.monotonic() < deadline, (what, json.dumps(st["shadow"])[:3000])
        time.sleep(0.2)


def _login(site: Site, group: str, fewer_projects: bool = False) -> str:
    sg = site.sg()
    n = len(sg.find("Project", []))
    users = sg.find("HumanUser", [["permission_rule_set.PermissionRuleSet.code", "is", group],
                                  ["sg_status_list", "is", "act"]], ["login", "projects"])
    return next(u["login"] for u in users if not fewer_projects or len(u["projects"]) < n)


def test_a_mismatch_quarantines_the_group_until_cleared(site_and_cache: tuple[Site, Cache]) -> None:
    site, cache = site_and_cache
    artist = _login(site, "Artist", fewer_projects=True)
    as_artist = {k: site.sg(u, sudo_as_login=artist) for k, u in (("cache", cache.url), ("site", site.url))}
    as_admin = site.sg(cache.url, sudo_as_login=_login(site, "Admin"))
    as_vendor = site.sg(cache.url, sudo_as_login=_login(site, "Vendor"))
    fields = ["name", "users"]

    # The wrong policy answers locally with projects the site hides from this Artist ...
    served, passed = _counts(cache)
    wrong = as_artist["cache"].find("Project", [], fields)
    right = as_artist["site"].find("Project", [], fields)
    assert len(wrong) > len(right)
    assert _counts(cache) == (served + 1, passed)
    # ... and the shadow read of that very answer, made as the Artist, quarantines the group.
    st = _wait_for(cache, lambda s: "Artist" in s["permissions"]["quarantined"], "Artist quarantined")
    assert st["shadow"]["results"]["mismatch"] == 1
    gq_row = st["permissions"]["quarantined"]["Artist"]
    assert [g["group"] for g in st["shadow"]["quarantined_groups"]] == ["Artist"] and gq_row["until"] is None
    assert st["shadow"]["quarantined"] == []  # no shape of the type is quarantined for everyone

    # Now every Artist read is the site's answer, passed through and counted as such ...
    served, passed = _counts(cache)
    assert as_artist["cache"].find("Project", [], fields) == right
    assert as_artist["cache"].find("Shot", [], ["code"]) == as_artist["site"].find("Shot", [], ["code"])
    assert _counts(cache) == (served, passed + 2)
    metrics = httpx.get(cache.url + "/metrics", timeout=10).text
    assert 'sgcache_passthrough_total{reason="permission_quarantine"} 2.0' in metrics
    # ... while other groups, full and restricted, keep being answered locally (and rightly).
    served, passed = _counts(cache)
    assert len(as_admin.find("Project", [], fields)) > len(right)
    as_vendor.find("Project", [], fields)
    as_admin.find("Shot", [], ["code"])
    assert _counts(cache) == (served + 3, passed)
    _wait_for(cache, lambda s: s["shadow"]["queued"] == 0, "shadow calls done")
    st = _status(cache)
    assert st["shadow"]["results"]["mismatch"] == 1 and list(st["permissions"]["quarantined"]) == ["Artist"]
    # The browser shows the Artist nothing from the cache either.
    browser = sign_in(cache.url, artist, PASSWORD)
    page = browser.get("/browse/Project")
    assert page.status_code == 200 and "permission quarantine" in page.text
    assert not any(html.escape(p["name"]) in page.text for p in wrong)

    # The operator sees which group and why (ids and field names, no values) and lifts it.
    report = sgcache(cache.env, "shadow", "report")
    assert report.returncode == 1 and "as permission group Artist" in report.stdout, report
    assert "GROUP QUARANTINED" in report.stdout and site.script_key not in report.stdout
    cleared = sgcache(cache.env, "shadow", "clear", "--group", "Artist")
    assert cleared.returncode == 0 and "cleared 1 " in cleared.stdout, cleared
    assert _status(cache)["permissions"]["quarantined"] == {}
    page = browser.get("/browse/Project").text  # (the browser's reads are not sampled)
    assert all(html.escape(p["name"]) in page for p in wrong), page[-3000:]
    served, passed = _counts(cache)
    assert len(as_artist["cache"].find("Project", [], fields)) == len(wrong)  # the policy is still wrong
    assert _counts(cache) == (served + 1, passed)
    _wait_for(cache, lambda s: "Artist" in s["permissions"]["quarantined"], "found again")


def _table(tmp: Path) -> tuple[Any, Any]:
    engine = create_engine(f"sqlite:///{tmp / 'q.sqlite'}")
    table = q.shadow_table(MetaData())
    table.create(engine)
    return engine, table


def _record(engine: Any, table: Any, group: str, policy: dict[str, Any], at: str) -> int:
    with engine.begin() as conn:
        rid = q.record(conn, table, method="read", shape=gq.group_shape("read", {"type": "Shot"}, group, policy),
                       diff={}, position=None, caller="someone")
        conn.execute(table.update().where(table.c.id == rid).values(at=at))
    return rid


def test_a_group_quarantine_ends_with_its_ttl_or_a_new_policy(tmp_path: Path) -> None:
    """Without waiting: `active` is given the time. A quarantine holds for the policy it was
    found under, for `ttl` seconds after its newest mismatch (0: until cleared)."""
    import datetime as dt
    engine, table = _table(tmp_path)
    full = {"policy": "full"}
    policies = {"Artist": full, "Client": {"policy": "assigned_projects"}}
    old = _record(engine, table, "Artist", full, "2026-01-01T10:00:00Z")
    _record(engine, table, "Client", {"policy": "full"}, "2026-01-01T10:00:00Z")  # found under another policy
    at = dt.datetime(2026, 1, 1, 10, 30, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        now = gq.active(conn, table, policies.__getitem__, 0, at)
    assert list(now) == ["Artist"] and now["Artist"].mismatch_id == old and now["Artist"].until is None
    with engine.begin() as conn:
        assert list(gq.active(conn, table, policies.__getitem__, 3600, at)) == ["Artist"]
    newer = _record(engine, table, "Artist", full, "2026-01-01T10:50:00Z")
    with engine.begin() as conn:  # the first is past its hour; the newer one holds the group
        later = gq.active(conn, table, policies.__getitem__, 3600, at + dt.timedelta(minutes=40))
    assert later["Artist"].mismatch_id == newer and later["Artist"].until == "2026-01-01T11:50:00Z"
    with engine.begin() as conn:
        assert gq.active(conn, table, policies.__getitem__, 3600, at + dt.timedelta(hours=2)) == {}
        rows = q.mismatches(conn, table)
    assert {r["cleared_by"] for r in rows if r["shape"]["permission_group"] == "Artist"} == {"expired"}
    engine.dispose()
