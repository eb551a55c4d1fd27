"""Benchmark: page through a large mock site with the real shotgun_api3 client.

    .venv/bin/python bench/mock_paging.py [--size 1000000] [--state bench/.state/demo-1m.pkl]
                                         [--url URL --script-name N --script-key K]

Starts `sgcache mock --demo SIZE --state FILE` (the state file makes later runs
skip generation), then reads every active entity of every type, 500 per page
ordered by id (the client's own paging loop), and prints entities/s. The
target is >= 20,000 entities/s for 1,000,000 entities.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--state", default=str(ROOT / "bench" / ".state" / "demo-1m.pkl"))
    ap.add_argument("--url")
    ap.add_argument("--script-name")
    ap.add_argument("--script-key")
    ap.add_argument("--fields", default="id", help="comma-separated return fields (besides type/id)")
    args = ap.parse_args()

    import shotgun_api3
    mock = None
    if args.url:
        sg = shotgun_api3.Shotgun(args.url, script_name=args.script_name, api_key=args.script_key)
    else:
        from tests.support.procs import start_mock
        Path(args.state).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        mock = start_mock("--demo", str(args.size), "--state", args.state)
        print(f"mock ready in {time.perf_counter() - t0:.1f}s at {mock.url}", flush=True)
        sg = mock.sg()
    try:
        fields = [f for f in args.fields.split(",") if f]
        types = list(sg.schema_entity_read())
        total = 0
        t0 = time.perf_counter()
        for etype in types:
            t1 = time.perf_counter()
            n = len(sg.find(etype, [], fields))
            total += n
            if n:
                dt = time.perf_counter() - t1
                print(f"  {etype:20s} {n:9d} rows {dt:7.2f}s {n / dt:9.0f}/s", flush=True)
        elapsed = time.perf_counter() - t0
        print(f"paged {total} entities in {elapsed:.1f}s: {total / elapsed:.0f} entities/s "
              f"(fields={fields})", flush=True)
    finally:
        if mock is not None:
            t0 = time.perf_counter()
            mock.stop(timeout=900)  # saves the state on shutdown
            print(f"mock stopped (state saved) in {time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
