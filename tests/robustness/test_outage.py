"""When the site fails, cached reads carry on and everything else fails fast and clearly.

The mock site's fault injection (admin port) switches on a full outage (every request
503), random 502/503/504s, dropped connections, or a hang longer than the cache's
upstream timeout. Callers verified within the grace period keep reading cached data;
passthrough calls get a Fault (not a ProtocolError, not a hang) within the timeout; and
only calls that are safe to repeat are retried (counted by the mock site's stats).
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import httpx
import pytest
import shotgun_api3

from ..e2e.harness import Cache, Site
from .conftest import OTHER_SCRIPT
from .servers import Primed, rpc, serve

TIMEOUT = 1.5
TTL = 1.0
#: Reads the cache answers locally (cached types, fields and relations only).
CACHED_READS: list[tuple[str, list[Any], list[str]]] = [
    ("Shot", [], ["code", "sg_status_list", "sg_sequence"]),
    ("Shot", [["code", "contains", "0"]], ["code"]),
    ("Task", [["entity", "type_is", "Shot"]], ["content", "entity"]),
    ("Version", [], ["code", "entity"]),
    ("HumanUser", [["name", "contains", "é"]], ["name", "login"]),
]


def set_faults(site: Site, **kw: Any) -> None:
    r = httpx.post(site.admin_url + "/faults", json={"reset": True, "seed": 7, **kw}, timeout=5)
    r.raise_for_status()


@pytest.fixture(scope="module")
def cache(primed: Primed) -> Iterator[Cache]:
    c = serve(primed, "--no-sync", upstream_timeout=TIMEOUT, upstream_connect_timeout=TIMEOUT,
              auth_ttl=TTL, auth_grace=300)
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def no_faults_after(site: Site) -> Iterator[None]:
    yield
    set_faults(site)


def read_all_cached(sg: shotgun_api3.Shotgun, rounds: int) -> tuple[int, int]:
    """(successes, attempts) of `rounds` passes over CACHED_READS."""
    ok = n = 0
    for _ in range(rounds):
        for etype, filters, fields in CACHED_READS:
            n += 1
            try:
                if sg.find(etype, filters, fields) is not None:
                    ok += 1
            except Exception:
                pass
    return ok, n


@pytest.mark.parametrize("faults", [
    {"outage": 120},
    {"error_rate": 0.7, "drop_rate": 0.2},
    {"latency": 5.0},
], ids=["outage", "errors-and-drops", "hang"])
def test_verified_callers_keep_cached_reads(site: Site, cache: Cache, faults: dict[str, Any]) -> None:
    sg = cache.sg(site)
    expected = [sg.find(*q) for q in CACHED_READS]  # verified while the site is up
    set_faults(site, **faults)
    time.sleep(TTL + 0.1)  # the verdict is now past its TTL but within the grace period
    t0 = time.monotonic()
    ok, n = read_all_cached(sg, 20)
    assert (ok, n) == (n, 100)
    assert [sg.find(*q) for q in CACHED_READS] == expected
    assert cache.sg(site).find(*CACHED_READS[0]) == expected[0]  # a new client connects (info) too
    # Only the first re-verification waits for the site (then it counts as down for a while).
    assert time.monotonic() - t0 < TIMEOUT + 10


def test_unverified_callers_get_no_data_during_an_outage(site: Site, cache: Cache) -> None:
    set_faults(site, outage=120)
    body = rpc(cache.url, "read", {"script_name": OTHER_SCRIPT[0], "script_key": OTHER_SCRIPT[1]},
               {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "and",
                                                                        "conditions": []}}).json()
    assert body["exception"] is True and "results" not in body
    assert "unavailable" in body["message"] or "reach" in body["message"]


def test_grace_period_ends(site: Site, primed: Primed) -> None:
    c = serve(primed, "--no-sync", upstream_timeout=TIMEOUT, auth_ttl=0.5, auth_grace=2.0)
    try:
        sg = c.sg(site)
        assert sg.find(*CACHED_READS[0])
        set_faults(site, outage=120)
        assert sg.find(*CACHED_READS[0])  # within grace
        time.sleep(2.1)
        with pytest.raises(shotgun_api3.Fault) as e:
            sg.find(*CACHED_READS[0])
        assert not isinstance(e.value, shotgun_api3.AuthenticationFault)
    finally:
        c.stop()


PASSTHROUGH: list[tuple[str, Any]] = [
    ("create", {"type": "NoSuchType", "fields": [{"field_name": "code", "value": "x"}], "return_fields": ["id"]}),
    ("update", {"type": "Shot", "id": 999999, "fields": [{"field_name": "code", "value": "x"}]}),
    ("delete", {"type": "Shot", "id": 999999}),
    ("batch", [{"request_type": "delete", "type": "Shot", "id": 999999}]),
    ("schema_field_read", {"type": "Shot", "field_name": "code"}),
    ("read", {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "and", "conditions": [
        {"path": "created_at", "relation": "in_last", "values": [3, "DAY"]}]}}),  # always passed through
]
SAFE = {"schema_field_read", "read"}


@pytest.mark.parametrize("faults", [{"outage": 120}, {"latency": 5.0}, {"drop_rate": 1.0}],
                         ids=["outage", "hang", "dropped"])
def test_passthrough_fails_fast_with_a_clear_fault(site: Site, cache: Cache, faults: dict[str, Any]) -> None:
    auth = {"script_name": site.script_name, "script_key": site.script_key}
    set_faults(site, **faults)
    # a hang costs the whole timeout per call: one write and one read show it
    calls = PASSTHROUGH if "latency" not in faults else [PASSTHROUGH[0], PASSTHROUGH[-1]]
    for method, params in calls:
        t0 = time.monotonic()
        r = rpc(cache.url, method, auth, params)
        took = time.monotonic() - t0
        assert r.status_code == 200
        body = r.json()
        assert body["exception"] is True and body["error_code"] == 503, (method, body)
        assert took < TIMEOUT + 1.0, (method, took)
        if method not in SAFE:
            assert "may or may not have been applied" in body["message"]
    # Through the real client: a Fault with the message, not a ProtocolError.
    sg = cache.sg(site, connect=False)
    with pytest.raises(shotgun_api3.Fault, match="unavailable"):
        sg.schema_field_read("Shot", "code")


@pytest.mark.parametrize("faults", [{"error_rate": 1.0, "error_codes": [502, 503, 504]}, {"drop_rate": 1.0}],
                         ids=["502-503-504", "dropped"])  # each status alone: test_units.py
def test_only_safe_methods_are_retried(site: Site, cache: Cache, faults: dict[str, Any]) -> None:
    auth = {"script_name": site.script_name, "script_key": site.script_key}
    set_faults(site, **faults)
    for method, params in PASSTHROUGH:
        site.reset_stats()
        body = rpc(cache.url, method, auth, params).json()
        assert body["exception"] is True
        sent = site.stats()["requests"].get(method, 0)
        # A read first re-verifies its caller once the verdict is past its TTL: a read of
        # its own, retried the same way (callers' failures no longer mark the site down).
        assert sent in ((3, 6) if method == "read" else (3,) if method in SAFE else (1,)), (method, sent)


def test_cache_catches_up_when_the_site_returns(site: Site, cache: Cache) -> None:
    sg = cache.sg(site, connect=False)
    set_faults(site, outage=120)
    with pytest.raises(shotgun_api3.Fault):
        sg.schema_field_read("Shot", "code")
    set_faults(site)
    assert "code" in sg.schema_field_read("Shot", "code")
