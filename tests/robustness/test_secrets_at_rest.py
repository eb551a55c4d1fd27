"""Credentials are not stored in clear by the cache: not in its database, not in its files.

The AuthVerifier keeps salted hashes only (test_units.py). The synced data must not
hold secrets either: the site's ApiUser `salted_password` ("Application Key") is a text
field, so a cache that stores it would hand every script key to any caller who may
read ApiUser; sgcache/store/field_types.py keeps it (like password fields) out of the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest
import sqlalchemy as sa

from ..cache.dbs import BACKENDS, new_db_url
from ..e2e.harness import Site, cache_env, sgcache, start_site
from .servers import Primed, rpc, serve


def test_no_script_key_in_the_cache_database(site: Site, primed: Primed) -> None:
    engine = sa.create_engine(primed.db_url)
    try:
        md = sa.MetaData()
        md.reflect(engine)
        hits = []
        with engine.connect() as conn:
            for name, table in md.tables.items():
                for col in table.columns:
                    if isinstance(col.type, (sa.String, sa.Text)):
                        n = conn.execute(sa.select(sa.func.count()).select_from(table)
                                         .where(col == site.script_key)).scalar()
                        if n:
                            hits.append(f"{name}.{col.name}")
    finally:
        engine.dispose()
    assert not hits


# -- secrets copied by the event log (issue 11, finding 9) ------------------------------------
#
# When a script's key changes, the site's EventLogEntry meta carries the new key (and the
# old value) as `new_value`/`old_value`. The cache refuses to hold such a meta, as it
# refuses the field itself (sgcache/store/field_types.py: `refuses_meta`); reads of it go to
# the site, while every other event's meta is still served from the cache.

KEYS = ["rotated-key-1-3e9a7c51d2b84f06", "rotated-key-2-91c4e7a0b35d6f28", "rotated-key-3-5d0b8e2f71a4c963"]


@dataclass
class Rotated:
    site: Site
    primed: Primed
    script_id: int


def _update_key(site: Site, script_id: int, key: str) -> None:
    r = rpc(site.url, "update", _auth(site), {"type": "ApiUser", "id": script_id,
                                               "fields": [{"field_name": "salted_password", "value": key}]})
    assert "exception" not in r.json(), r.text


def _auth(site: Site) -> dict[str, str]:
    return {"script_name": site.script_name, "script_key": site.script_key}


@pytest.fixture(scope="module", params=BACKENDS)
def rotated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotated]:
    """A site whose script keys changed before the cache's full scan and after it (caught up
    through the event log), and a cache of it."""
    site = start_site(demo=20)
    tmp = tmp_path_factory.mktemp("rotated-" + request.param)
    try:
        for url in new_db_url(request.param, tmp):
            r = rpc(site.url, "create", _auth(site), {"type": "ApiUser", "fields": [
                {"field_name": "firstname", "value": "rotating_tool"},
                {"field_name": "salted_password", "value": KEYS[0]}]})
            script_id = r.json()["results"]["id"]
            _update_key(site, script_id, KEYS[1])
            env = cache_env(site, url, tmp)
            res = sgcache(env, "scan", "--full")
            assert res.returncode == 0, res.stderr[-4000:]
            _update_key(site, script_id, KEYS[2])
            events = sgcache(env, "events", "--once")
            assert events.returncode == 0, events.stderr[-4000:]
            assert not [k for k in KEYS for r in (res, events) if k in r.stdout + r.stderr], "a key was logged"
            yield Rotated(site, Primed(site, url, tmp), script_id)
    finally:
        site.stop()


def _all_text(db_url: str) -> list[tuple[str, str]]:
    """(table.column, value) of every text value in the database, bookkeeping tables included."""
    engine = sa.create_engine(db_url)
    out = []
    try:
        md = sa.MetaData()
        md.reflect(engine)
        with engine.connect() as conn:
            for name, table in md.tables.items():
                cols = [c for c in table.columns if isinstance(c.type, (sa.String, sa.Text))]
                for row in conn.execute(sa.select(*cols)) if cols else []:
                    out.extend((f"{name}.{c.name}", v) for c, v in zip(cols, row) if isinstance(v, str))
    finally:
        engine.dispose()
    return out


def test_changed_script_keys_are_nowhere_in_the_cache_database(rotated: Rotated) -> None:
    text = _all_text(rotated.primed.db_url)
    assert any("rotating_tool" in v for _, v in text), "the script's events should be cached"
    hits = sorted({where for where, v in text for key in KEYS if key in v})
    assert hits == []


def _events(site: Site, script_id: int, attribute: str) -> dict[str, Any]:
    return {"type": "EventLogEntry", "return_fields": ["event_type", "attribute_name", "meta"],
            "filters": {"logical_operator": "and", "conditions": [
                {"path": "attribute_name", "relation": "is", "values": [attribute]},
                {"path": "entity", "relation": "is", "values": [{"type": "ApiUser", "id": script_id}]}]},
            "sorts": [{"field_name": "id", "direction": "asc"}]}


def _passed_through(cache_url: str) -> float:
    text = httpx.get(cache_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sgcache_passthrough_total{"))


def test_the_meta_of_a_key_change_is_answered_by_the_site(rotated: Rotated) -> None:
    site = rotated.site
    c = serve(rotated.primed, "--no-sync", debug=True)
    try:
        params = _events(site, rotated.script_id, "salted_password")
        before = _passed_through(c.url)
        mine = rpc(c.url, "read", _auth(site), params).json()
        assert mine == rpc(site.url, "read", _auth(site), params).json()
        assert len(mine["results"]["entities"]) == 3  # set at creation, changed twice
        assert _passed_through(c.url) == before + 1, "the cache answered it from what it holds"

        params = _events(site, rotated.script_id, "firstname")  # other events' meta: still local
        before = _passed_through(c.url)
        mine = rpc(c.url, "read", _auth(site), params).json()
        assert mine == rpc(site.url, "read", _auth(site), params).json()
        assert mine["results"]["entities"][0]["meta"]["new_value"] == "rotating_tool"
        assert _passed_through(c.url) == before
    finally:
        c.stop()
    assert c.log is not None and not [k for k in KEYS if k in c.log.read_text()], "a key was logged"


def test_validating_the_event_log_compares_every_meta_but_the_withheld(rotated: Rotated) -> None:
    """`validate data` over EventLogEntry: the withheld metas are left to the site, the rest
    compared field by field, and the run is clean (not an error) with no key in its output."""
    env = cache_env(rotated.site, rotated.primed.db_url, rotated.primed.data_dir)
    res = sgcache(env, "validate", "data", "EventLogEntry", "--fields", "meta,attribute_name")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert not [k for k in KEYS if k in res.stdout + res.stderr]
    assert "withheld" in res.stdout  # says which values it could not compare, and why
