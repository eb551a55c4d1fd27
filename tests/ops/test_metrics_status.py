"""`/metrics` parsed by the Prometheus client's own parser, `/healthz`, `/readyz`, `/status.json`,
and the structured request log."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..e2e.harness import Cache, Site, start_cache


@pytest.fixture(scope="module")
def cache(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    tmp = tmp_path_factory.mktemp("metrics")
    c = start_cache(site, f"sqlite:///{tmp / 'cache.sqlite'}", tmp, "--json-logs",
                    SGCACHE_POLL_INTERVAL="0.5")
    yield c
    c.stop()


def scrape(cache: Cache) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(cache.url + "/metrics", timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(pred: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_healthz_and_readyz(cache: Cache) -> None:
    assert httpx.get(cache.url + "/healthz").text == "ok\n"
    r = wait_for(lambda: (lambda r: r if r.status_code == 200 else None)(httpx.get(cache.url + "/readyz")))
    assert r.text == "ready\n"
    r = httpx.get(cache.url + "/readyz", params={"max_lag": "-1"})
    assert r.status_code == 503 and "lag" in r.text


def test_metrics_move_after_requests(site: Site, cache: Cache) -> None:
    before = scrape(cache)
    sg = cache.sg(site)
    sg.find("Shot", [], ["code"])
    sg.find("Shot", [["created_at", "in_last", [1, "DAY"]]], ["code"])  # always the site's
    sg.schema_field_read("Shot")
    after = scrape(cache)
    served = ("sgcache_requests_total", dict(method="read", outcome="served", reason=""))
    passed = ("sgcache_requests_total", dict(method="read", outcome="passthrough", reason="time_relative"))
    other = ("sgcache_requests_total", dict(method="schema_field_read", outcome="passthrough", reason="method"))
    for name, labels in (served, passed, other):
        assert value(after, name, **labels) == value(before, name, **labels) + 1, (name, labels)
    assert value(after, "sgcache_request_seconds_count", method="read", outcome="served") == \
        value(before, "sgcache_request_seconds_count", method="read", outcome="served") + 1
    assert value(after, "sgcache_passthrough_total", reason="time_relative") >= 1
    assert value(after, "sgcache_upstream_requests_total", method="read") > \
        value(before, "sgcache_upstream_requests_total", method="read")


def test_state_gauges_follow_the_site(site: Site, cache: Cache) -> None:
    s = wait_for(lambda: (lambda m: m if value(m, "sgcache_rows", entity_type="Shot", state="active") else None)(scrape(cache)))
    shots = site.sg().find("Shot", [], ["id"])
    assert value(s, "sgcache_rows", entity_type="Shot", state="active") == len(shots)
    assert value(s, "sgcache_last_scan_timestamp_seconds", kind="full") > time.time() - 600
    assert ("sgcache_last_scan_duration_seconds", (("kind", "full"),)) in s
    assert value(s, "sgcache_sync_leader") == 1
    sg = site.sg()
    shot = sg.find_one("Shot", [], ["code"])
    sg.update("Shot", shot["id"], {"description": "metrics moved"})
    newest = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])["id"]
    # the site's end of log is asked at most every status.SITE_EVERY seconds
    s = wait_for(lambda: (lambda m: m if value(m, "sgcache_last_event_id") >= newest
                          and value(m, "sgcache_site_last_event_id") >= newest else None)(scrape(cache)))
    assert value(s, "sgcache_event_lag_ids") == value(s, "sgcache_site_last_event_id") - value(s, "sgcache_last_event_id")
    assert ("sgcache_event_lag_seconds", ()) in s and ("sgcache_event_backlog", ()) in s
    assert ("sgcache_upstream_errors_total", (("kind", "x"),)) not in s


def test_status_json_shows_state_history_and_reasons(site: Site, cache: Cache) -> None:
    cache.sg(site).find("Shot", [["created_at", "in_last", [2, "DAY"]]], ["code"])
    d = wait_for(lambda: (lambda d: d if len(d["history"]) >= 2 else None)(httpx.get(cache.url + "/status.json").json()))
    assert d["site"] == site.url and d["leader"] is True
    assert d["state"]["rows"]["Shot"]["active"] > 0 and "full" in d["state"]["scans"]
    assert any("time-relative" in n["reason"] and n["entity_type"] == "Shot" for n in d["recent_passthrough"])
    assert all({"t", "lag_seconds", "rate"} <= set(s) for s in d["history"])


def test_request_log_lines_are_json_with_caller_and_no_secrets(site: Site, cache: Cache) -> None:
    sg = cache.sg(site, sudo_as_login="artist1")
    try:
        sg.find("Asset", [], ["code"])
    except Exception:
        pass  # whether sudo is allowed is the site's business; the log line is ours
    assert cache.log is not None
    def line() -> dict[str, Any] | None:
        for raw in reversed(cache.log.read_text().splitlines()):
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if rec.get("logger") == "sgcache.access" and rec.get("entity_type") == "Asset" \
                    and rec.get("sudo_as_login") == "artist1":
                return rec
        return None
    rec = wait_for(line, 5)
    assert rec["method"] == "read" and rec["caller"] == site.script_name
    assert rec["outcome"] in ("served", "passthrough", "refused") and rec["ms"] >= 0
    assert site.script_key not in cache.log.read_text()
