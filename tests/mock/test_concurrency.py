"""The mock answers concurrent requests concurrently: `--latency` delays each request
without holding up the others, so a benchmark with many requests in flight plays a
hosted site (100-500 ms a page) instead of a queue."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from tests.support.procs import MockProcess, running_mock

LATENCY = 0.5
CLIENTS = 8


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[MockProcess]:
    with running_mock("--demo", "300", "--latency", str(LATENCY)) as m:
        yield m


def _read(mock: MockProcess, etype: str) -> int:
    body = json.dumps({"method_name": "read", "params": [
        {"script_name": mock.script_name, "script_key": mock.script_key},
        {"type": etype, "return_fields": ["id"], "filters": {"logical_operator": "and", "conditions": []},
         "return_only": "active", "paging": {"entities_per_page": 50, "current_page": 1}}]}).encode()
    req = urllib.request.Request(mock.url + "/api3/json", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return len(json.loads(r.read())["results"]["entities"])


def test_latency_delays_each_request_without_serializing_concurrent_ones(slow_mock: MockProcess) -> None:
    t0 = time.perf_counter()
    _read(slow_mock, "Shot")
    assert time.perf_counter() - t0 >= LATENCY  # each request is delayed ...

    slow_mock.reset_stats()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        counts = list(pool.map(lambda t: _read(slow_mock, t), ["Shot", "Asset", "Task", "Version"] * (CLIENTS // 4)))
    elapsed = time.perf_counter() - t0
    assert all(n > 0 for n in counts)
    assert slow_mock.stats()["requests"]["read"] == CLIENTS
    # ... but not behind one another: serialized, 8 would take 8 x 0.5 s.
    assert LATENCY <= elapsed < LATENCY * CLIENTS / 2, elapsed


def test_latency_set_at_run_time_applies_to_requests_in_parallel(slow_mock: MockProcess) -> None:
    slow_mock.set_faults(latency=0.3)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda _: _read(slow_mock, "Shot"), range(CLIENTS)))
        elapsed = time.perf_counter() - t0
        assert 0.3 <= elapsed < 0.3 * CLIENTS / 2, elapsed
    finally:
        slow_mock.set_faults(latency=LATENCY)
