"""`serve --workers 2`: every worker answers as one cache, whichever of them took the write.

A client's connection stays with one worker, but its next connection (or its colleague's)
may land on the other: a write passed through one worker must be what the other reads
next, for point reads (the read path with a connection of its own per worker) and for
coalesced passthrough reads (each worker shares its own calls, but a write's time is
shared through the data dir).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from sgcache.serve.coalesce import Answer, Coalescer, WriteClock

from ..e2e.harness import Site, start_cache


def _pinned_clients(url: str, timeout: float = 30.0) -> dict[int, httpx.Client]:
    """One keep-alive client on each worker (a connection stays with the worker that took it)."""
    by_pid: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + timeout
    while len(by_pid) < 2 and time.monotonic() < deadline:
        c = httpx.Client(base_url=url, timeout=30)
        pid = c.get("/status.json").json()["pid"]
        if pid in by_pid:
            c.close()
        else:
            by_pid[pid] = c
    assert len(by_pid) == 2, "two workers answer"
    return by_pid


def _rpc(c: httpx.Client, method: str, auth: dict[str, Any], params: dict[str, Any]) -> Any:
    r = c.post("/api3/json", json={"method_name": method, "params": [auth, params]})
    body = r.json()
    assert "results" in body, body
    return body["results"]


def test_each_worker_point_reads_the_other_workers_writes(site: Site, tmp_path: Path) -> None:
    cache = start_cache(site, f"sqlite:///{tmp_path / 'cache.sqlite'}", tmp_path, "--workers", "2")
    auth = {"script_name": site.script_name, "script_key": site.script_key}
    shot = site.sg().find_one("Shot", [], ["description"])
    by_id = {"type": "Shot", "return_fields": ["description"], "return_only": "active",
             "filters": {"logical_operator": "and", "conditions": [{"path": "id", "relation": "is",
                                                                     "values": [shot["id"]]}]},
             "paging": {"entities_per_page": 1, "current_page": 1}}
    clients = _pinned_clients(cache.url)
    try:
        a, b = clients.values()
        for c in (a, b):  # both workers have the row now, and have verified the caller
            _rpc(c, "read", auth, by_id)
        site.reset_stats()
        for i in range(6):
            writer, reader = (a, b) if i % 2 == 0 else (b, a)
            text = f"written through one worker, read through the other ({i})"
            _rpc(writer, "update", auth, {"type": "Shot", "id": shot["id"], "fields": [
                {"field_name": "description", "value": text}]})
            assert _rpc(reader, "read", auth, by_id)["entities"][0]["description"] == text
        assert site.stats()["requests"].get("read", 0) <= 6 + 6, "the reads were the cache's, not the site's"
    finally:
        for c in clients.values():
            c.close()
        site.sg().update("Shot", shot["id"], {"description": shot["description"]})
        cache.stop()


def test_a_write_through_one_worker_keeps_the_other_from_sharing_an_older_call(tmp_path: Path) -> None:
    """Two workers' coalescers on one data dir: a call in flight on worker B since before
    the caller's write returned on worker A is not shared with that caller's next read."""
    path = tmp_path / "coalesce.clock"
    worker_a = Coalescer(WriteClock(path))
    worker_b = Coalescer(WriteClock(path))
    auth = {"script_name": "farm", "script_key": "k"}
    key = worker_b.key("read", [auth, {"type": "Shot"}], {})
    assert key is not None
    sent: list[str] = []

    async def scenario() -> list[bytes]:
        release = asyncio.Event()

        async def slow_site() -> Answer:
            sent.append("older")
            await release.wait()
            return Answer(200, (), b"before the write")

        async def fresh_site() -> Answer:
            sent.append("newer")
            return Answer(200, (), b"after the write")

        older = asyncio.ensure_future(worker_b.call(key, "read", auth, slow_site))
        await asyncio.sleep(0.01)
        worker_a.wrote(auth)  # the caller's write returned, through the other worker
        mine = await worker_b.call(key, "read", auth, fresh_site)
        release.set()
        before = await older
        # Another caller's write does not stop sharing: a third identical read gets the
        # newer answer, kept for the window, without a call.
        worker_a.wrote({"script_name": "someone else", "script_key": "k2"})
        third, shared = await worker_b.call(key, "read", auth, fresh_site)
        assert shared
        return [before[0].body, mine[0].body, third.body]

    assert asyncio.run(scenario()) == [b"before the write", b"after the write", b"after the write"]
    assert sent == ["older", "newer"]
