"""Event-to-visible lag, and the watcher's requests to the site, for two poll settings in one run.

Each sample updates one Shot's description on the mock site (not through the cache), then
reads the cache's database through the read engine every 5 ms until the new value is
there. Writes are spaced by a random 0..`--spacing` s after the previous one became
visible, the same for every setting, so writes land anywhere in the poll cycle.

The watcher runs as `sgcache events` (no server: no status sampler or thumbnail reads),
so every request the mock counts (admin `/stats`) is the watcher's, apart from the
benchmark's own `update`s, which are subtracted. Each setting first idles `--idle` s
(requests per second with nothing to apply), then takes its samples. Settings run one
after the other on the same site, each with a freshly primed cache.

    python bench/event_lag.py --samples 100                    # old settings vs the defaults
    python bench/event_lag.py --samples 100 --db-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_db, loadavg, machine, summarize, write_result  # noqa: E402
from tests.support.procs import start_mock  # noqa: E402
from tests.sync.support import CacheEnv, CacheView  # noqa: E402

#: name -> environment: the settings before issue 15 (a fixed 2 s poll), and the defaults.
SETTINGS: dict[str, dict[str, str]] = {
    "poll 2 s (before)": {"SGCACHE_POLL_INTERVAL": "2", "SGCACHE_POLL_BUDGET": "0"},
    "defaults (poll 0.5 s, budget 2 requests/s)": {},
}


def site_requests(mock: Any) -> tuple[int, dict[str, int]]:
    """Requests that reached the site since the last reset, less the benchmark's own updates."""
    st = mock.admin("GET", "/stats")
    req = dict(st["requests"])
    return st["total"] - req.get("update", 0), req


def run_setting(mock: Any, sg: Any, shots: list[int], name: str, env: dict[str, str], args: Any,
                data: Path, k: int) -> dict[str, Any]:
    db_url, drop = fresh_db(args.db_url, data, f"c{k}")
    cache = CacheEnv(mock, db_url, data / f"c{k}",
                     extra_env={"SGCACHE_THUMBNAIL_CACHE_MB": "0", "SGCACHE_SCAN_INTERVAL": "3600", **env})
    cache.data_dir.mkdir(parents=True, exist_ok=True)
    cache.prime()
    cache.start("events")
    view = None
    try:
        cache.ctrl("poll")
        view = CacheView(cache.db_url)
        load_before = loadavg()
        mock.admin("POST", "/stats/reset")
        t_idle = time.monotonic()
        time.sleep(args.idle)
        idle_n, _ = site_requests(mock)
        idle_s = time.monotonic() - t_idle
        mock.admin("POST", "/stats/reset")
        t0 = time.monotonic()
        rng = random.Random(3)
        lags: list[float] = []
        for i in range(args.samples):
            time.sleep(rng.uniform(0, args.spacing))
            sid = rng.choice(shots)
            value = f"lag sample {i} {time.time()}"
            sg.update("Shot", sid, {"description": value})
            t = time.perf_counter()
            while True:
                got = view.read("Shot", [["id", "is", sid]], ["description"])
                if got and got[0]["description"] == value:
                    break
                if time.perf_counter() - t > 60:
                    raise RuntimeError(f"{name}: sample {i} never became visible")
                time.sleep(0.005)
            lags.append(time.perf_counter() - t)
        n, by_method = site_requests(mock)
        secs = time.monotonic() - t0
        summary = summarize(lags)
        out = {"setting": name, "env": env, "lag": summary,
               "watcher_requests": n, "seconds": round(secs, 1), "watcher_requests_per_s": round(n / secs, 3),
               "idle_requests_per_s": round(idle_n / idle_s, 3), "site_requests_by_method": by_method,
               "edits_per_s": round(len(lags) / secs, 3), "loadavg_before": load_before, "loadavg_after": loadavg()}
        print(f"{name}: lag p50 {summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms, max "
              f"{summary['max_ms']:.0f} ms; watcher {n / secs:.2f} requests/s with {len(lags) / secs:.2f} "
              f"edits/s ({idle_n / idle_s:.2f}/s idle); load {out['loadavg_after'][0]}", flush=True)
        return out
    finally:
        if view is not None:
            view.close()
        cache.stop()
        drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100, help="edits per setting")
    ap.add_argument("--demo", type=int, default=2000)
    ap.add_argument("--db-url", default="")
    ap.add_argument("--spacing", type=float, default=2.0, help="most seconds between an edit seen and the next")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of no edits measured first")
    ap.add_argument("--only", default="", help="run only the settings whose name contains this")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sgb-", dir="/tmp"))
    mock = start_mock("--demo", str(args.demo))
    try:
        sg = mock.sg()
        shots = [s["id"] for s in sg.find("Shot", [], ["id"])]
        results = [run_setting(mock, sg, shots, name, env, args, data, k)
                   for k, (name, env) in enumerate(SETTINGS.items()) if args.only in name]
        backend = "postgresql" if args.db_url.startswith("postgresql") else "sqlite"
        path = write_result(args.out or f"event_lag-{backend}", {
            "benchmark": "event_lag", "backend": backend, "spacing_s": args.spacing, "samples": args.samples,
            "settings": results, "loadavg": loadavg(), "machine": machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])})
        print(f"wrote {path}")
    finally:
        mock.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
