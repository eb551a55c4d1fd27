"""The status page in a real browser: headless Chromium loads /status and we read what it shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from sgcache.store.tables import Store, make_engine
from sgcache.sync.rebuild import clear_marks, mark_rebuilding

from ..e2e.harness import Cache, Site, start_cache

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("SGCACHE_REQUIRE_BROWSER"):
            pytest.fail(f"SGCACHE_REQUIRE_BROWSER is set but {CHROMIUM} is missing (Debian package `chromium`)")
        pytest.skip("needs headless Chromium (Debian package `chromium`); CI installs it")


class Dom(HTMLParser):
    """Text by element id, and the attributes of every element, from a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._open: list[str | None] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._table: list[str | None] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "table":
            self._table.append(a.get("id"))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        if tag not in ("meta", "br", "img", "input", "link", "line", "polyline"):
            self._open.append(a.get("id"))
            if a.get("id"):
                self.text.setdefault(a["id"], "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table and self._table[-1]:
            if self._row and tag == "tr":
                self.rows.setdefault(self._table[-1], []).append(self._row)
            self._row = None
        elif tag == "table" and self._table:
            self._table.pop()
        if tag not in ("meta", "br", "img", "input", "link", "line", "polyline") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for i in self._open:
            if i:
                self.text[i] = self.text.get(i, "") + data
        if self._cell is not None:
            self._cell.append(data)


def dump_dom(url: str, profile: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def cache(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    _require_browser()
    tmp = tmp_path_factory.mktemp("status")
    c = start_cache(site, f"sqlite:///{tmp / 'cache.sqlite'}", tmp, SGCACHE_POLL_INTERVAL="0.5")
    yield c
    c.stop()


def test_the_status_page_shows_site_lag_counts_scans_reasons_and_plots(
        site: Site, cache: Cache, tmp_path: Path) -> None:
    sg = cache.sg(site)
    for _ in range(3):
        sg.find("Shot", [], ["code"])
    sg.find("Shot", [["created_at", "in_last", [1, "DAY"]]], ["code"])  # a passthrough with a reason
    engine = make_engine(cache.env["SGCACHE_DB_URL"])
    schema = Store.recorded_schema(engine)
    assert schema is not None
    store = Store(engine, schema)
    mark_rebuilding(store, ["Version"], "loading")  # as `sgcache rebuild Version` would
    deadline = time.monotonic() + 30
    try:
        while True:  # two samples make a line
            d = httpx.get(cache.url + "/status.json").json()
            if sum(s["lag_seconds"] is not None for s in d["history"]) >= 2 and d["state"]["rows"] \
                    and d["state"]["rebuilding"]:
                break
            assert time.monotonic() < deadline, d
            time.sleep(0.5)
        dom = Dom()
        dom.feed(dump_dom(cache.url + "/status", tmp_path / "profile"))
    finally:
        clear_marks(store, ["Version"])
        engine.dispose()

    assert dom.text["site"].strip() == site.url
    assert dom.text["ready"].strip() == "ready"
    assert dom.text["leader"].strip() == "sync leader"
    assert dom.text["lag"].strip().endswith("s") or dom.text["lag"].strip().endswith("min")
    assert dom.text["backlog"].strip() == "0"
    assert dom.text["last-event"].strip() == str(d["state"]["last_event_id"])
    assert int(dom.text["req-served"]) >= 3 and int(dom.text["req-passed"]) >= 1

    counts = {r[0]: r[1:] for r in dom.rows["counts"][1:]}
    shots = len(site.sg().find("Shot", [], ["id"]))
    assert counts["Shot"][0] == str(shots)
    scans = {r[0]: r for r in dom.rows["scans"][1:]}
    assert "full" in scans and scans["full"][1].endswith("Z")
    reasons = dom.rows["reasons"][1:]
    assert any(r[1] == "Shot" and "time-relative" in r[2] for r in reasons), reasons

    assert "rebuilding: Version (loading)" in dom.text["rebuilding"]
    assert "not primed" not in dom.text["rebuilding"]  # the full scan primed every type
    lines = {a["data-series"]: int(a["data-points"]) for tag, a in dom.elements
             if tag == "polyline" and "data-series" in a}
    assert lines["lag"] >= 2 and lines["total"] >= 2 and lines["served"] >= 2 and lines["passthrough"] >= 2
    assert any(tag == "body" and a.get("data-rendered") for tag, a in dom.elements)
