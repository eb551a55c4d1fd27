"""Throughput with workers: `serve --workers 2` against `--workers 1`, `by_id` reads (issue 15, item 2).

A `--size`-entity mock site, a freshly primed SQLite cache, and two `sgcache serve` on
it (the sync on, as deployed: one worker of each is the sync leader), one with
`--workers 1` and one with `--workers 2`. wrk (Debian's `wrk` package: C, so the load
generator costs little of the machine's 2 cores) posts `find_one("Shot", [["id", "is",
N]], 5 fields)` bodies, N random, over `--connections` keep-alive connections, in
`--rounds` rounds of `--duration` s per server, alternating which goes first. Reports
requests/s per round and the median ratio, and each server's answers are checked
against the site for a sample of ids beforehand. Target: ratio ≥ 1.7.

    .venv/bin/python bench/workers.py [--size 20000] [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LUA = """
math.randomseed(%(seed)d)
local head = '{"method_name": "read", "params": [{"script_name": %(name)s, "script_key": %(key)s}, ' ..
  '{"type": "Shot", "return_fields": ["code", "sg_status_list", "sg_sequence", "project", "description"], ' ..
  '"filters": {"logical_operator": "and", "conditions": [{"path": "id", "relation": "is", "values": ['
local tail = ']}]}, "return_only": "active", "paging": {"entities_per_page": 1, "current_page": 1}, ' ..
  '"api_return_image_urls": true, "return_paging_info_without_counts": true}]}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json; charset=utf-8"
request = function()
  return wrk.format(nil, "/api3/json", nil, head .. math.random(1, %(max_id)d) .. tail)
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"results"', 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%f %%f\\n", summary.requests, summary.errors.status + bad,
                         latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def _tree(pid: int) -> list[int]:
    """A process and its descendants (the supervisor and its workers)."""
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for k in kids:
        out += _tree(int(k))
    return out


def wrk(url: str, script: Path, connections: int, duration: float, threads: int,
        server_pid: int | None = None) -> dict[str, Any]:
    """One wrk run; with `server_pid`, the CPU seconds per second the server tree and wrk used."""
    pids = _tree(server_pid) if server_pid else []
    cpu0 = sum(common.cpu_seconds(p) or 0.0 for p in pids)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
                          "--timeout", "30s", "-s", str(script), url], capture_output=True, text=True,
                         timeout=duration + 60)
    m = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+)", out.stdout)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if not m or not rps:
        raise RuntimeError(out.stdout + out.stderr)
    bad = int(m.group(2)) + sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out.stdout))
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {"requests": int(m.group(1)), "rps": float(rps.group(1)), "bad": bad,
           "p50_ms": round(float(m.group(3)), 2), "p99_ms": round(float(m.group(4)), 2)}
    if server_pid:
        res["server_cpu_per_s"] = round((sum(common.cpu_seconds(p) or 0.0 for p in pids) - cpu0) / duration, 2)
        res["wrk_cpu_per_s"] = round((kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime)
                                     / duration, 2)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20_000, help="entities on the mock site")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per round and server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--name", default="workers", help="result file name under bench/results")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        ap.error("wrk is needed: apt-get install wrk")

    work = common.WORK / "workers"
    work.mkdir(parents=True, exist_ok=True)
    mock = common.start_mock(common.WORK / f"site-{args.size}.pickle", size=args.size, log=work / "mock.log")
    servers: dict[int, tuple[str, Any]] = {}
    rounds: list[dict[str, Any]] = []
    try:
        for p in work.glob("cache.sqlite*"):
            p.unlink()
        env = common.cache_env(mock, f"sqlite:///{work / 'cache.sqlite'}", work, None)
        env.update(SGCACHE_SHADOW_RATE="0", SGCACHE_THUMBNAIL_CACHE_MB="0")
        scan = common.full_scan(env)
        print(f"primed: {scan['rows']} rows in {scan['scan_seconds']}s", flush=True)
        sg = mock.sg()
        max_id = sg.find_one("Shot", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])["id"]
        script = work / "by_id.lua"
        script.write_text(LUA % {"seed": 1, "name": json.dumps(mock.script_name), "key": json.dumps(mock.script_key),
                                 "max_id": max_id}, encoding="utf-8")
        for n in (1, 2):
            servers[n] = common.start_cache_server(env, work / f"serve-{n}.log", "--workers", str(n))
        for n, (url, _) in servers.items():  # every worker answers as the site does
            for sid in (1, max_id // 2, max_id):
                with httpx.Client(base_url=url) as c:  # a new connection: any worker
                    mine = common.make_client(url, mock.script_name, mock.script_key).find_one(
                        "Shot", [["id", "is", sid]], ["code", "sg_status_list"])
                    assert mine == sg.find_one("Shot", [["id", "is", sid]], ["code", "sg_status_list"]), (n, sid)
            wrk(url + "/api3/json", script, args.connections, 3, args.threads)  # warm every worker
        for r in range(args.rounds):
            row: dict[str, Any] = {"loadavg_before": common.loadavg()}
            for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                row[f"workers_{n}"] = wrk(servers[n][0] + "/api3/json", script, args.connections,
                                          args.duration, args.threads, servers[n][1].pid)
            row["ratio"] = round(row["workers_2"]["rps"] / row["workers_1"]["rps"], 2)
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for _, proc in servers.values():
            common.stop(proc)
        mock.discard()
    ratio = statistics.median(r["ratio"] for r in rounds)
    out = {"site_entities": scan["rows"], "db": "sqlite", "connections": args.connections,
           "duration_s": args.duration, "wrk_threads": args.threads, "rounds": rounds,
           "median_rps": {n: statistics.median(r[f"workers_{n}"]["rps"] for r in rounds) for n in (1, 2)},
           "median_ratio": ratio, "errors": sum(r[f"workers_{n}"]["bad"] for r in rounds for n in (1, 2)),
           # requests per CPU-second the server tree used: whether two workers do the same work
           # as one for each CPU-second they get (the ratio above also measures how much they get)
           "median_rps_per_cpu_s": {n: round(statistics.median(
               r[f"workers_{n}"]["rps"] / r[f"workers_{n}"]["server_cpu_per_s"] for r in rounds
               if r[f"workers_{n}"].get("server_cpu_per_s")), 1) for n in (1, 2)},
           "machine": common.machine()}
    path = common.write_result(args.name, out)
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "rounds")}))
    print(f"wrote {path}")
    return 0 if ratio >= 1.7 and out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
