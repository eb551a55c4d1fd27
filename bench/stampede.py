"""Stampede: thousands of farm jobs start at once and make the same reads (issue 15).

A `--size`-entity mock site answering every request after `--latency` s (a site across a
WAN, and one that slows under load), a freshly primed SQLite cache, and two
`sgcache serve --no-sync` on it that differ only in `SGCACHE_COALESCE` (1 and 0). For
each, in turn: `--clients` clients (asyncio tasks spread over `--procs` processes, one
keep-alive connection each, api3 bodies as `shotgun_api3` sends them, written as plain
HTTP/1.1 on asyncio streams so the clients cost the 2 shared cores little) start at random
within one second and each make the same 5 reads, one after another:

1. `find_one("Shot", [["id", "is", N]])`                               cached
2. Shots of one sequence, sorted by code                              cached
3. Shots created in the last 100 years (`in_last`: time-relative)     uncached, a `read`
4. Tasks of one shot                                                  cached
5. Shots by status, counted, created in the last 100 years            uncached, a `summarize`

Every client asks the same 5 reads, so there are 2 distinct uncached reads, and the site's
own count of `read` and `summarize` requests (mock admin `/stats`, reset before each run;
the clients' script was verified before) is the number of calls per distinct uncached read.
Reports those, p50/p99 latency of all reads, and errors (anything but an HTTP 200 with
results). Target: ≤ 2 site calls per distinct uncached read with coalescing, 0 errors.

    .venv/bin/python bench/stampede.py                 # 2,000 clients, 100,000-entity site
    .venv/bin/python bench/stampede.py --clients 200 --size 20000   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LONG_AGO = {"path": "created_at", "relation": "in_last", "values": [36500, "DAY"]}


def _and(*conds: dict[str, Any]) -> dict[str, Any]:
    return {"logical_operator": "and", "conditions": list(conds)}


def reads(shot: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The 5 reads every client makes (`shot`: one shot with its sequence)."""
    page = {"entities_per_page": 500, "current_page": 1}
    defaults = {"return_only": "active", "api_return_image_urls": True,
                "return_paging_info_without_counts": True}
    fields = ["code", "sg_status_list", "sg_sequence", "project", "description"]
    return [
        ("read", {"type": "Shot", "return_fields": fields, **defaults,
                  "filters": _and({"path": "id", "relation": "is", "values": [shot["id"]]}),
                  "paging": {"entities_per_page": 1, "current_page": 1}}),
        ("read", {"type": "Shot", "return_fields": fields, **defaults,
                  "filters": _and({"path": "sg_sequence", "relation": "is", "values": [shot["sg_sequence"]]}),
                  "sorts": [{"field_name": "code", "direction": "asc"}], "paging": page}),
        ("read", {"type": "Shot", "return_fields": ["code", "sg_status_list"], **defaults,
                  "filters": _and(LONG_AGO, {"path": "sg_sequence", "relation": "is",
                                             "values": [shot["sg_sequence"]]}), "paging": page}),
        ("read", {"type": "Task", "return_fields": ["content", "sg_status_list", "step", "task_assignees"],
                  **defaults, "filters": _and({"path": "entity", "relation": "is",
                                               "values": [{"type": "Shot", "id": shot["id"]}]}), "paging": page}),
        ("summarize", {"type": "Shot", "filters": _and(LONG_AGO),
                       "summaries": [{"field": "id", "type": "count"}],
                       "grouping": [{"field": "sg_status_list", "type": "exact", "direction": "asc"}]}),
    ]


# -- the client processes -----------------------------------------------------------------

async def _client(url: str, bodies: list[bytes], start: float, out: dict[str, Any]) -> None:
    """One client: one keep-alive connection, the 5 requests one after another. Plain HTTP/1.1
    over asyncio streams (what httplib2 sends), so 2,000 clients cost the 2 cores little."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    host, port = url.removeprefix("http://").split(":")
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError as e:
        out["errors"][f"connect {type(e).__name__}"] = out["errors"].get(f"connect {type(e).__name__}", 0) + len(bodies)
        return
    try:
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            kind = "ok"
            try:
                writer.write(b"POST /api3/json HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                             b"User-Agent: shotgun-json (stampede)\r\nContent-Length: %d\r\n\r\n%s"
                             % (host.encode(), len(body), body))
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
                status = int(head.split(b" ", 2)[1])
                length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                data = await reader.readexactly(length)
                if status != 200:
                    kind = f"http {status}"
                elif data.startswith(b'{"exception"') or b'"exception":true' in data[:40]:
                    kind = "fault " + json.loads(data).get("message", "")[:80]
                elif b'"results"' not in data:
                    kind = "bad reply"
            except Exception as e:  # counted, never fatal
                kind = f"transport {type(e).__name__}"
            dt = time.perf_counter() - t0
            if kind == "ok":
                out["lat"].append(dt)
                out["lat_by_read"][i].append(dt)
            else:
                out["errors"][kind] = out["errors"].get(kind, 0) + 1
                if kind.startswith("transport"):  # the connection is gone: the rest are not sent
                    out["errors"]["not sent"] = out["errors"].get("not sent", 0) + len(bodies) - i - 1
                    return
    finally:
        writer.close()


async def _lag(out: list[float], every: float = 0.05) -> None:
    """How late this process's own loop wakes up: its clients' latencies include that much."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(every)
        out.append(time.monotonic() - t - every)


def _worker(url: str, bodies: list[bytes], starts: list[float], conn: Any) -> None:
    out: dict[str, Any] = {"lat": [], "lat_by_read": [[] for _ in bodies], "errors": {}, "lag": []}

    async def run() -> None:
        lag = asyncio.ensure_future(_lag(out["lag"]))
        await asyncio.gather(*(_client(url, bodies, s, out) for s in starts))
        lag.cancel()
    asyncio.run(run())
    conn.send(out)
    conn.close()


def stampede(url: str, bodies: list[bytes], clients: int, procs: int, seed: int) -> dict[str, Any]:
    """`clients` clients starting at random within one second, spread over `procs` processes."""
    rng = random.Random(seed)
    t0 = time.monotonic() + 3.0  # time for the processes to start (spawned)
    starts = [t0 + rng.random() for _ in range(clients)]
    ctx = mp.get_context("spawn")
    pipes, ps = [], []
    for i in range(procs):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(url, bodies, starts[i::procs], child))
        p.start()
        pipes.append(parent)
        ps.append(p)
    results = [pipe.recv() for pipe in pipes]
    wall = time.monotonic() - t0
    for p in ps:
        p.join(30)
    lat = sorted(x for r in results for x in r["lat"])
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    by_read = [sorted(x for r in results for x in r["lat_by_read"][i]) for i in range(len(bodies))]
    lag = sorted(x for r in results for x in r["lag"])
    pct = lambda xs, p: round(common.percentile(xs, p) * 1000, 1) if xs else None  # noqa: E731
    return {"requests": len(lat) + sum(errors.values()), "ok": len(lat), "errors": sum(errors.values()),
            "error_kinds": errors, "wall_s": round(wall, 2),
            "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                           "max": round(lat[-1] * 1000, 1) if lat else None},
            "p99_ms_by_read": [pct(xs, 99) for xs in by_read],
            # the client processes' own loops: a late wake-up is latency the server did not add
            "client_loop_lag_ms": {"p99": pct(lag, 99), "max": round(lag[-1] * 1000, 1) if lag else None}}


def site_stats(mock: common.Mock) -> dict[str, int]:
    return httpx.get(mock.admin_url + "/stats", timeout=10).json()["requests"]


def metric_sum(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=4, help="client processes the clients are spread over")
    ap.add_argument("--size", type=int, default=100_000, help="entities on the mock site")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the site takes for every request")
    ap.add_argument("--workers", type=int, default=1, help="`serve --workers` of each cache server")
    ap.add_argument("--name", default="stampede", help="result file name under bench/results")
    args = ap.parse_args(argv)

    work = common.WORK / "stampede"
    work.mkdir(parents=True, exist_ok=True)
    state = common.WORK / f"site-{args.size}.pickle"
    print(f"mock site: {args.size} entities (state {state})", flush=True)
    mock = common.start_mock(state, size=args.size, log=work / "mock.log")
    servers: dict[str, Any] = {}
    out: dict[str, Any] = {}
    try:
        db = work / "cache.sqlite"
        for p in work.glob("cache.sqlite*"):
            p.unlink()
        env = common.cache_env(mock, f"sqlite:///{db}", work, None)
        env.update(SGCACHE_SHADOW_RATE="0", SGCACHE_THUMBNAIL_CACHE_MB="0")
        scan = common.full_scan(env)
        print(f"primed: {scan['rows']} rows in {scan['scan_seconds']}s", flush=True)
        sg = mock.sg()
        shot = sg.find_one("Shot", [["sg_sequence", "is_not", None]], ["sg_sequence"])
        auth = {"script_name": mock.script_name, "script_key": mock.script_key}
        bodies = [json.dumps({"method_name": m, "params": [auth, p]}, ensure_ascii=False).encode()
                  for m, p in reads(shot)]
        for mode in ("on", "off"):
            menv = dict(env, SGCACHE_COALESCE="1" if mode == "on" else "0")
            url, proc = common.start_cache_server(menv, work / f"serve-{mode}.log", "--no-sync",
                                                  "--workers", str(args.workers))
            servers[mode] = (url, proc)
            with httpx.Client(base_url=url, timeout=60) as c:  # the script verified; every read once
                for b in bodies:
                    assert "results" in c.post("/api3/json", content=b).json()
        httpx.post(mock.admin_url + "/faults", json={"latency": args.latency}, timeout=10)
        for mode in ("on", "off"):
            url, _ = servers[mode]
            time.sleep(1.5)  # past the reuse window of the warm-up reads
            httpx.post(mock.admin_url + "/stats/reset", timeout=10)
            shared0 = metric_sum(url, "sgcache_coalesced_total")
            load = common.loadavg()
            print(f"coalescing {mode}: {args.clients} clients (load {load})", flush=True)
            res = stampede(url, bodies, args.clients, args.procs, seed=1)
            calls = site_stats(mock)
            res.update(loadavg_before_after=[load, common.loadavg()],
                       site_calls={"read (uncached read 3)": calls.get("read", 0),
                                   "summarize (uncached read 5)": calls.get("summarize", 0),
                                   "other": sum(v for k, v in calls.items() if k not in ("read", "summarize"))},
                       site_calls_per_distinct_uncached_read=round(
                           (calls.get("read", 0) + calls.get("summarize", 0)) / 2, 1),
                       coalesced=metric_sum(url, "sgcache_coalesced_total") - shared0)
            out[f"coalesce_{mode}"] = res
            print(json.dumps(res, indent=1), flush=True)
    finally:
        for _, proc in servers.values():
            common.stop(proc)
        mock.discard()
    result = {"clients": args.clients, "client_procs": args.procs, "site_entities": scan["rows"],
              "site_latency_s": args.latency, "workers": args.workers, "db": "sqlite",
              "reads_per_client": 5, "distinct_uncached_reads": 2, **out, "machine": common.machine()}
    path = common.write_result(args.name, result)
    print(f"wrote {path}")
    on = out["coalesce_on"]
    return 0 if on["errors"] == 0 and on["site_calls_per_distinct_uncached_read"] <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
