"""One writer: of several sync processes on one database exactly one leads; when it dies
another takes over within seconds and carries on from the stored position."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.support.procs import MockProcess

from .support import CacheEnv, CacheView, site_one


def test_follower_takes_over_when_the_leader_dies(mock: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    procs = {p.pid: p for p in (cache.start("events"), cache.start("events"))}
    first = cache.ctrl("status")
    assert first["leader"] and first["pid"] in procs
    time.sleep(1.5)  # both have tried the lock by now; still one leader
    assert cache.ctrl("status")["pid"] == first["pid"]

    os.kill(first["pid"], signal.SIGKILL)
    procs[first["pid"]].wait(10)
    t0 = time.monotonic()
    while True:
        try:
            st = cache.ctrl("status", timeout=5)
            if st["pid"] != first["pid"]:
                break
        except (ConnectionError, OSError):
            pass
        assert time.monotonic() - t0 < 10, "no follower took over"
        time.sleep(0.1)
    took_over = time.monotonic() - t0
    assert took_over < 5, took_over

    sg = mock.sg()
    sg.update("Shot", 1, {"description": "after the takeover"})
    cli = subprocess.run([sys.executable, "-m", "sgcache.cli", "ctrl", "poll"], env={**os.environ, **cache.env},
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["pid"] == st["pid"]
    assert view.one("Shot", 1, ["description"]) == site_one(sg, "Shot", 1, ["description"])


def test_leader_survives_a_site_outage_while_taking_over(mock: MockProcess, cache: CacheEnv,
                                                          view: CacheView) -> None:
    mock.set_faults(outage=120)  # every request answers 503 until the outage is ended below
    proc = cache.start("events")
    # Wait for the leader to fail its start against the outage (however long start-up takes),
    # then end the outage: no timing guess either way.
    deadline = time.monotonic() + 60
    while "sync leader start failed" not in cache.log("events"):
        assert proc.poll() is None and time.monotonic() < deadline, cache.log("events")
        time.sleep(0.05)
    mock.set_faults(outage=0)
    assert proc.poll() is None
    sg = mock.sg()
    sg.update("Shot", 2, {"description": "after the outage"})
    cache.ctrl("poll")
    assert view.one("Shot", 2, ["description"]) == site_one(sg, "Shot", 2, ["description"])
