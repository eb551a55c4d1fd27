"""Event-to-visible lag: a write made directly on the site (not through the cache) until the
cache serves the new value, with `sgcache serve` at its default poll interval.

Each sample updates one Shot's description on the mock site, then reads the cache's
database through the read engine every 5 ms until the new value is there. Each write
waits a random 0..poll-interval after the previous one became visible (which happens
right after a poll), so writes land uniformly over the poll cycle.

    python bench/event_lag.py --samples 100
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import loadavg, machine, summarize, write_result  # noqa: E402
from tests.support.procs import start_mock  # noqa: E402
from tests.sync.support import CacheEnv, CacheView  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--demo", type=int, default=2000)
    ap.add_argument("--db-url", default="")
    ap.add_argument("--poll-interval", default="", help="default: the config default")
    ap.add_argument("--out", default="event_lag")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sgb-", dir="/tmp"))
    mock = start_mock("--demo", str(args.demo))
    try:
        env = {"SGCACHE_POLL_INTERVAL": args.poll_interval} if args.poll_interval else {}
        cache = CacheEnv(mock, args.db_url or f"sqlite:///{data}/cache.sqlite", data, extra_env=env)
        cache.prime()
        cache.serve()
        cache.ctrl("poll")
        poll_interval = cache.config.poll_interval
        view = CacheView(cache.db_url)
        sg = mock.sg()
        shots = [s["id"] for s in sg.find("Shot", [], ["id"])]
        rng = random.Random(3)
        lags: list[float] = []
        for k in range(args.samples):
            time.sleep(rng.uniform(0, poll_interval))
            sid = rng.choice(shots)
            value = f"lag sample {k} {time.time()}"
            sg.update("Shot", sid, {"description": value})
            t0 = time.perf_counter()
            while True:
                got = view.read("Shot", [["id", "is", sid]], ["description"])
                if got and got[0]["description"] == value:
                    break
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"sample {k} never became visible")
                time.sleep(0.005)
            lags.append(time.perf_counter() - t0)
        view.close()
        summary = summarize(lags)
        print(f"event-to-visible lag over {len(lags)} writes at poll interval {poll_interval}s: "
              f"p50 {summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms, max {summary['max_ms']:.0f} ms")
        backend = "postgresql" if args.db_url.startswith("postgresql") else "sqlite"
        path = write_result(args.out, {
            "benchmark": "event_lag", "backend": backend, "poll_interval_s": poll_interval,
            "lag": summary, "loadavg": loadavg(), "machine": machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])})
        print(f"wrote {path}")
    finally:
        if "cache" in locals():
            cache.stop()
        mock.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
