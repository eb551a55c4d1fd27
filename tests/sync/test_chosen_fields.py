"""A cache holding a chosen subset of fields: it stays that subset, and is exact for it.

Both start from a schema without `Shot.description`: chosen by rules, or by a file made
with `sgcache schema filter` (the operator's documented path).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.support.procs import ROOT, MockProcess

from .conftest import make_cache
from .support import CacheView, site_one

RULES = "*\n!Shot.description\n"


def wire(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A client's record with datetimes as the wire (and the cache's reads) spell them."""
    if record is None:
        return None
    return {k: v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, dt.datetime) else v
            for k, v in record.items()}


def test_a_change_to_an_uncached_field_refreshes_what_it_moved(mock: MockProcess, backend: str,
                                                              tmp_path: Path) -> None:
    """The write that changed an uncached field also moved `updated_at` and `updated_by`:
    `updated_at > t` must see it as soon as the event is applied, not at the next scan."""
    rules = tmp_path / "rules.txt"
    rules.write_text(RULES)
    for cache in make_cache(mock, backend, tmp_path, SGCACHE_RULES=str(rules)):
        cache.start("events")
        cache.ctrl("poll")
        view = CacheView(cache.db_url)
        try:
            assert "description" not in view.store["Shot"].fields
            sg = mock.sg()
            fields = ["updated_at", "updated_by"]
            before = view.one("Shot", 1, fields)
            t = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            sg.update("Shot", 1, {"description": "a field the cache does not hold"})
            want = wire(site_one(sg, "Shot", 1, fields))
            assert want != before  # the premise: the site moved them
            cache.ctrl("poll")
            assert view.one("Shot", 1, fields) == want
            since = view.read("Shot", [["updated_at", "greater_than", t]], ["id"])
            assert [e["id"] for e in since] == [1]
        finally:
            view.close()


def sgcache(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "sgcache.cli", *args], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_a_schema_file_stays_as_chosen_through_schema_checks(mock: MockProcess, backend: str,
                                                            tmp_path: Path) -> None:
    site_env = {"SGCACHE_SHOTGUN_URL": mock.url, "SGCACHE_SCRIPT_NAME": mock.script_name,
                "SGCACHE_SCRIPT_KEY": mock.script_key}
    (tmp_path / "rules.txt").write_text(RULES)
    sgcache(site_env, "schema", "dump", "-o", str(tmp_path / "site.json"))
    sgcache({}, "schema", "filter", "--rules", str(tmp_path / "rules.txt"), "-i", str(tmp_path / "site.json"),
            "-o", str(tmp_path / "cached.json"))
    for cache in make_cache(mock, backend, tmp_path, SGCACHE_SCHEMA=str(tmp_path / "cached.json")):
        def described(db_url: str = cache.db_url) -> tuple[bool, bool]:
            """(recorded in the chosen schema, has a column)"""
            view = CacheView(db_url)
            try:
                cols = {c["name"] for c in sa.inspect(view.engine).get_columns("Shot")}
                return "description" in view.store.schema["Shot"].fields, "description" in cols
            finally:
                view.close()
        assert described() == (False, False)
        cache.start("events")
        cache.ctrl("poll")
        cache.ctrl("scan")  # the periodic schema check runs with the scan
        assert described() == (False, False)
        # The choice is the database's: a process started without SGCACHE_SCHEMA keeps it too.
        cache.stop()
        del cache.extra_env["SGCACHE_SCHEMA"]
        cache.start("events")
        cache.ctrl("scan")
        assert described() == (False, False)
