"""Fault injection through the admin port, observed with the real client, and request stats."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
import shotgun_api3

from tests.support.procs import MockProcess, running_mock


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProcess]:
    with running_mock() as m:
        yield m


@pytest.fixture(autouse=True)
def no_faults(mock: MockProcess) -> Iterator[None]:
    mock.clear_faults()
    mock.reset_stats()
    yield
    mock.clear_faults()


@pytest.fixture(scope="module")
def sg(mock: MockProcess) -> Any:
    return mock.sg()


def test_stats_count_requests_by_method(mock: MockProcess, sg: Any) -> None:
    sg.find("Project", [])
    sg.find_one("Project", [])
    sg.create("Project", {"name": "stats"})
    s = mock.stats()
    assert s["requests"]["read"] == 2 and s["requests"]["create"] == 1 and s["total"] == 3
    mock.reset_stats()
    assert mock.stats()["total"] == 0


def test_latency(mock: MockProcess, sg: Any) -> None:
    mock.set_faults(latency=0.3)
    t = time.perf_counter()
    sg.find("Project", [])
    assert time.perf_counter() - t >= 0.3
    assert mock.faults()["latency"] == 0.3


def test_http_503_is_not_retried_by_the_client(mock: MockProcess, sg: Any) -> None:
    mock.set_faults(error_rate=1.0, error_codes=[503])
    with pytest.raises(shotgun_api3.ProtocolError) as e:
        sg.find("Project", [])
    assert e.value.errcode == 503
    s = mock.stats()
    assert s["requests"]["read"] == 1 and s["injected"] == {"503": 1}


def test_http_502_is_retried_three_times(mock: MockProcess, sg: Any) -> None:
    mock.set_faults(error_rate=1.0, error_codes=[502])
    with pytest.raises(shotgun_api3.ProtocolError):
        sg.find("Project", [])
    assert mock.stats()["requests"]["read"] == 3


def test_error_rate_is_a_rate(mock: MockProcess, sg: Any) -> None:
    mock.set_faults(error_rate=0.5, error_codes=[503], seed=7)
    ok = failed = 0
    for _ in range(40):
        try:
            sg.find_one("Project", [])
            ok += 1
        except shotgun_api3.ProtocolError:
            failed += 1
    assert 5 < failed < 35 and ok + failed == 40


def test_dropped_connections(mock: MockProcess) -> None:
    mock.set_faults(drop_rate=1.0)
    sg = mock.sg(connect=False)
    with pytest.raises(Exception) as e:
        sg.find("Project", [])
    assert not isinstance(e.value, shotgun_api3.Fault)
    assert mock.stats()["injected"]["drop"] >= 1


def test_outage_window(mock: MockProcess, sg: Any) -> None:
    mock.set_faults(outage=1.0)
    with pytest.raises(shotgun_api3.ProtocolError) as e:
        sg.find("Project", [])
    assert e.value.errcode == 503
    assert mock.faults()["outage"] > 0
    time.sleep(1.1)
    sg.find("Project", [])


def _event_ids(sg: Any) -> list[int]:
    return [e["id"] for e in sg.find("EventLogEntry", [], ["id"])]


def test_out_of_order_event_commits(mock: MockProcess, sg: Any) -> None:
    before = set(_event_ids(sg))
    mock.set_faults(event_delay=1.5, event_delay_rate=1.0)
    sg.create("Project", {"name": "late events"})
    mock.set_faults(event_delay_rate=0.0)
    sg.create("Project", {"name": "on time"})
    now_visible = set(_event_ids(sg)) - before
    time.sleep(1.6)
    later = set(_event_ids(sg)) - before
    assert now_visible and now_visible < later
    assert min(later - now_visible) < min(now_visible)  # a lower id appeared after higher ones


def test_event_ids_that_never_appear(mock: MockProcess, sg: Any) -> None:
    start = max(_event_ids(sg) or [0])
    mock.set_faults(event_gap_rate=1.0)
    sg.create("Project", {"name": "gaps"})
    ids = [i for i in _event_ids(sg) if i > start]
    assert ids and all(b - a == 2 for a, b in zip(ids, ids[1:]))
    assert ids[0] == start + 2


def test_admin_rejects_bad_settings(mock: MockProcess) -> None:
    for body in ({"error_rate": 2}, {"nonsense": 1}, {"error_codes": [200]}):
        req = urllib.request.Request(mock.admin_url + "/faults", data=json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 400


def test_admin_is_on_loopback_and_not_on_the_public_port(mock: MockProcess) -> None:
    assert mock.admin_url.startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(mock.url + "/stats")
    assert e.value.code in (404, 405)


def test_faults_from_the_command_line() -> None:
    with running_mock("--event-gap-rate", "0.5", "--fault-seed", "1", "--latency", "0.01") as m:
        f = m.faults()
        assert f["event_gap_rate"] == 0.5 and f["latency"] == 0.01 and f["error_rate"] == 0


@pytest.mark.parametrize("body", [
    b'{"method_name":"read","params":[{},{"type":"Project","filters":{"logical_operator":"and",'
    b'"conditions":[{"path":"id","relation":"is","values":[NaN]}]}}]}',
    b'{"method_name":"info","params":[Infinity]}',
    b'{"method_name":"read","params":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
])
def test_bodies_that_are_not_json_get_the_sites_fault(mock: MockProcess, body: bytes) -> None:
    """NaN and Infinity are not JSON, and a body nested too deep cannot be read: the site
    answers each with its invalid-JSON Fault (HTTP 200), never a 500 or a value it made up."""
    req = urllib.request.Request(mock.url + "/api3/json", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
        answer = json.loads(r.read())
    assert answer["exception"] is True and "Invalid JSON" in answer["message"], answer
    assert mock.stats()["requests"].get("invalid") == 1


def test_the_demo_sites_images_are_served_by_the_mock() -> None:
    """What the demo's `image` fields point at is an image on the mock itself."""
    with running_mock("--demo", "300") as mock:
        _demo_images(mock)


def _demo_images(mock: MockProcess) -> None:
    shot = next(s for s in mock.sg().find("Shot", [], ["image"]) if s["image"])
    assert shot["image"].startswith(mock.url + "/thumbnail/Shot/"), shot
    with urllib.request.urlopen(shot["image"], timeout=30) as r:
        assert r.status == 200 and r.headers["content-type"] == "image/png"
        assert r.read().startswith(b"\x89PNG")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(mock.url + "/thumbnail/NoSuchType/1.png", timeout=30)
    assert e.value.code == 404
