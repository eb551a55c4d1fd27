"""Applied events per second for a burst: the watcher catching up with N new events.

A mock site (demo data) gets a burst of mixed writes through `batch` (Task updates,
Task creates linked to Shots with their back-reference events, Shot updates) while no
watcher runs; then the watcher, positioned before the burst, catches up with
`catch_up()` and is timed. Afterwards the cached rows are compared with the site.

`--replay` also measures the cache's own side: every site response of the live run is
recorded, and a second cache (primed identically) catches up against the recording,
served from memory, so the site's time drops out. It also reports the CPU time the
catching-up process spent (events per CPU-second), which a loaded machine stretches less
than the wall-clock rate.

    python bench/event_apply.py --events 50000                       # SQLite
    python bench/event_apply.py --events 50000 --db-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_db, loadavg, machine, write_result  # noqa: E402
from tests.support.procs import start_mock  # noqa: E402
from tests.sync.support import CacheEnv, CacheView, compare_all  # noqa: E402


def burst(mock, n_events: int, seed: int = 1) -> int:  # type: ignore[no-untyped-def]
    """Write until the site's log has grown by n_events; returns how many it grew."""
    sg = mock.sg()
    rng = random.Random(seed)
    shots = [s["id"] for s in sg.find("Shot", [], ["id"])]
    tasks = [t["id"] for t in sg.find("Task", [], ["id"])]
    first = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
    start = first["id"] if first else 0
    last, k = start, 0
    while last - start < n_events:
        reqs = []
        for _ in range(250):
            k += 1
            r = rng.random()
            if r < 0.7:
                reqs.append({"request_type": "update", "entity_type": "Task", "entity_id": rng.choice(tasks),
                             "data": {"content": f"burst {k}"}})
            elif r < 0.8:
                reqs.append({"request_type": "create", "entity_type": "Task", "data": {
                    "content": f"new {k}", "project": {"type": "Project", "id": 1},
                    "entity": {"type": "Shot", "id": rng.choice(shots)}}})
            else:
                reqs.append({"request_type": "update", "entity_type": "Shot", "entity_id": rng.choice(shots),
                             "data": {"description": f"burst {k}"}})
        sg.batch(reqs)
        ev = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
        last = ev["id"]
    return last - start


class Recorder(httpx.AsyncHTTPTransport):
    """Pass requests to the site and keep each response body, keyed by request body."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[bytes, bytes] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await super().handle_async_request(request)
        body = await resp.aread()
        self.bodies[request.content] = body
        return httpx.Response(resp.status_code, headers=resp.headers, content=body)


def replayer(bodies: dict[bytes, bytes]) -> httpx.MockTransport:
    async def handle(request: httpx.Request) -> httpx.Response:
        body = bodies.get(await request.aread())
        if body is None:
            raise RuntimeError("replay: a request the live run did not make")
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})
    return httpx.MockTransport(handle)


CPU: dict[str, float] = {}


async def catch_up(cache: CacheEnv, transport: Any = None, cpu_key: str = "") -> tuple[int, float]:
    """Catch up; returns (events, wall seconds). The CPU time this process spent (every
    thread: the event loop and the writer; the site is another process) goes to CPU."""
    from sgcache.runtime import CacheService
    from sgcache.sync.loop import SyncLoop
    svc = await CacheService.open(cache.config, create=False, transport=transport)
    try:
        loop = SyncLoop(svc)
        await loop.watcher.start()
        t0, c0 = time.perf_counter(), time.process_time()
        n = await loop.watcher.catch_up()
        if cpu_key:
            CPU[cpu_key] = time.process_time() - c0
        return n, time.perf_counter() - t0
    finally:
        await svc.aclose()


async def position(cache: CacheEnv) -> None:
    from sgcache.runtime import CacheService
    from sgcache.sync.loop import SyncLoop
    svc = await CacheService.open(cache.config, create=False)
    try:
        await SyncLoop(svc).watcher.start()
    finally:
        await svc.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--demo", type=int, default=3000)
    ap.add_argument("--db-url", default="", help="default: SQLite in a temp dir")
    ap.add_argument("--out", default="event_apply")
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--rules", default="", help="a rules file choosing the cached types/fields")
    ap.add_argument("--replay", action="store_true", help="also time the cache side alone (see above)")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sgb-", dir="/tmp"))
    mock = start_mock("--demo", str(args.demo))
    drops: list[Any] = []

    def new_db(name: str) -> str:
        url, drop = fresh_db(args.db_url, data, name)
        drops.append(drop)
        return url
    try:
        env = {"SGCACHE_RULES": str(Path(args.rules).resolve())} if args.rules else {}
        cache = CacheEnv(mock, new_db("live"), data, extra_env=env)
        cache.prime()
        asyncio.run(position(cache))
        twin = None
        if args.replay:
            twin = CacheEnv(mock, new_db("replay"), data, extra_env=env)
            twin.prime()
            asyncio.run(position(twin))
        t0 = time.perf_counter()
        written = burst(mock, args.events)
        write_s = time.perf_counter() - t0
        print(f"burst: {written} events written in {write_s:.1f}s", flush=True)
        recorder = Recorder() if args.replay else None
        n, secs = asyncio.run(catch_up(cache, recorder, "live"))
        rate = n / secs if secs else 0.0
        print(f"applied {n} events in {secs:.2f}s: {rate:,.0f} events/s", flush=True)
        replay: dict[str, Any] = {}
        if twin is not None and recorder is not None:
            load = loadavg()
            rn, rsecs = asyncio.run(catch_up(twin, replayer(recorder.bodies), "replay"))
            replay = {"events": rn, "seconds": round(rsecs, 3), "events_per_s": round(rn / rsecs, 1),
                      "cpu_seconds": round(CPU["replay"], 3), "events_per_cpu_s": round(rn / CPU["replay"], 1),
                      "loadavg_before": load}
            print(f"cache side alone (site answers replayed from memory): {rn} events in {rsecs:.2f}s: "
                  f"{rn / rsecs:,.0f} events/s; {CPU['replay']:.2f} CPU-s: {rn / CPU['replay']:,.0f} "
                  "events/CPU-s", flush=True)
        diffs: list[str] = []
        if not args.no_compare:
            view = CacheView(cache.db_url)
            diffs = compare_all(mock, view, ["Task", "Shot"], limit=0)
            view.close()
            print(f"compare Task+Shot: {len(diffs)} differences", flush=True)
        backend = "postgresql" if args.db_url.startswith("postgresql") else "sqlite"
        path = write_result(args.out, {
            "benchmark": "event_apply", "backend": backend, "events": n, "seconds": round(secs, 3),
            "events_per_s": round(rate, 1), "cpu_seconds": round(CPU.get("live", 0.0), 3),
            "rules": args.rules or None, "burst_write_seconds": round(write_s, 2),
            "differences": len(diffs), "cache_side_replay": replay, "loadavg": loadavg(), "machine": machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])})
        print(f"wrote {path}")
    finally:
        mock.stop()
        for drop in drops:
            drop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
