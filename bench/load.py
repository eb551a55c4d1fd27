"""Load: many concurrent api3 clients against one `sgcache serve` on PostgreSQL.

Issue 6, item 4 (not a CI test). Starts the mock site (a demo studio, kept as a
`--state` file under /tmp), primes a fresh PostgreSQL database with
`sgcache scan --full`, starts `sgcache serve --no-sync`, then runs `--clients`
concurrent clients (default 200) for `--duration` seconds (default 60). Each client
holds one keep-alive connection and sends reads exactly as `shotgun_api3` sends them
(a mix of by-id, filtered, deep-filtered and multi-entity reads, a different query
every time, as a script and as a script sudoing as a user), checking each answer.

Reports: requests, errors (anything but HTTP 200 with `results.entities`), throughput,
latency percentiles, the server's RSS before, during and after (peak = VmHWM) and its
CPU use. The load is spread over `--procs` client processes so the generator is not
the bottleneck on its own.

    .venv/bin/python bench/load.py --db-url postgresql+psycopg://postgres@127.0.0.1:54360/postgres
    .venv/bin/python bench/load.py --clients 50 --duration 20     # quick look

With `--db-url` pointing at a server, a fresh database is created there and dropped
afterwards; SGCACHE_TEST_PG_URL is used when no `--db-url` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

READ_DEFAULTS = {"return_only": "active", "api_return_image_urls": True,
                 "return_paging_info_without_counts": True}
SHOT_FIELDS = ["code", "sg_status_list", "sg_sequence", "sg_cut_in", "sg_cut_out", "description",
               "project", "created_at", "updated_at", "created_by", "tag_list"]


def _conds(*conds: list[Any], op: str = "and") -> dict[str, Any]:
    return {"logical_operator": op, "conditions": [
        {"path": p, "relation": r, "values": v} for p, r, v in conds]}


def query(rng: random.Random, max_ids: dict[str, int]) -> dict[str, Any]:
    """One read as the client would send it; a different one each call."""
    kind = rng.random()
    shot = rng.randint(1, max_ids["Shot"])
    if kind < 0.35:  # find_one by id
        p = {"type": "Shot", "return_fields": SHOT_FIELDS, "filters": _conds(["id", "is", [shot]]),
             "paging": {"entities_per_page": 1, "current_page": 1}}
    elif kind < 0.6:  # a status filter with a cut range, sorted, one page
        lo = rng.randint(900, 1100)
        p = {"type": "Shot", "return_fields": SHOT_FIELDS,
             "filters": _conds(["sg_status_list", "in", rng.sample(["ip", "fin", "wtg", "hld", "omt"], 2)],
                               ["sg_cut_in", "between", [lo, lo + 50]]),
             "sorts": [{"field_name": "code", "direction": "asc"}],
             "paging": {"entities_per_page": 50, "current_page": 1}}
    elif kind < 0.8:  # tasks of a shot, with deep return fields
        p = {"type": "Task", "return_fields": ["content", "sg_status_list", "entity", "step", "task_assignees",
                                               "entity.Shot.code", "step.Step.code"],
             "filters": _conds(["entity", "is", [{"type": "Shot", "id": shot}]]),
             "paging": {"entities_per_page": 500, "current_page": 1}}
    elif kind < 0.9:  # a deep filter through a link
        p = {"type": "Shot", "return_fields": ["code", "sg_sequence"],
             "filters": _conds(["sg_sequence.Sequence.code", "contains", [f"{rng.randint(1, 99):02d}"]]),
             "paging": {"entities_per_page": 100, "current_page": 1}}
    else:  # versions of a few shots
        ids = [{"type": "Shot", "id": rng.randint(1, max_ids["Shot"])} for _ in range(5)]
        p = {"type": "Version", "return_fields": ["code", "entity", "sg_status_list", "user", "created_at"],
             "filters": _conds(["entity", "in", ids]), "paging": {"entities_per_page": 200, "current_page": 1}}
    return {**p, **READ_DEFAULTS}


# -- the client processes ---------------------------------------------------------------------

async def _client(url: str, auths: list[dict[str, Any]], max_ids: dict[str, int], seed: int, stop_at: float,
                  warm_until: float, out: dict[str, Any]) -> None:
    import httpx
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as client:
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            body = json.dumps({"method_name": "read", "params": [rng.choice(auths), query(rng, max_ids)]},
                              ensure_ascii=False).encode()
            started = time.monotonic()
            t0 = time.perf_counter()
            kind = "ok"
            try:
                r = await client.post("/api3/json", content=body, headers={
                    "content-type": "application/json; charset=utf-8", "user-agent": "shotgun-json (load)"})
                if r.status_code != 200:
                    kind = f"http {r.status_code}"
                else:
                    data = r.json()
                    if data.get("exception"):
                        kind = f"fault {data.get('error_code')}: {str(data.get('message'))[:80]}"
                    elif not isinstance((data.get("results") or {}).get("entities"), list):
                        kind = "bad reply"
            except Exception as e:  # counted, never fatal: the run goes on
                kind = f"transport {type(e).__name__}"
            dt = time.perf_counter() - t0
            if started < warm_until:
                continue  # warm-up: not measured
            if kind == "ok":
                out["lat"].append(dt)
            else:
                out["errors"][kind] = out["errors"].get(kind, 0) + 1


def _worker(url: str, auths: list[dict[str, Any]], max_ids: dict[str, int], n: int, first_seed: int,
            start_at: float, warmup: float, duration: float, conn: Any) -> None:
    out: dict[str, Any] = {"lat": [], "errors": {}}

    async def run() -> None:
        # wait for the common start (monotonic clocks agree across processes on Linux)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        stop_at = start_at + warmup + duration
        await asyncio.gather(*(_client(url, auths, max_ids, first_seed + i, stop_at, start_at + warmup, out)
                               for i in range(n)))
    asyncio.run(run())
    conn.send(out)
    conn.close()


# -- server process sampling -------------------------------------------------------------------

def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) in kB, from /proc."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """RSS of the server every `interval` seconds while the load runs."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_flag = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop_flag.wait(self.interval):
            try:
                self.samples.append((time.monotonic() - t0, _proc_status(self.pid)["VmRSS"]))
            except (OSError, KeyError):
                return

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(5)


# -- databases ---------------------------------------------------------------------------------

# -- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db-url", default=os.environ.get("SGCACHE_TEST_PG_URL"),
                    help="a PostgreSQL server URL; a fresh database is created on it (default SGCACHE_TEST_PG_URL)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=max(1, min(4, (os.cpu_count() or 2))),
                    help="client processes the clients are spread over")
    ap.add_argument("--size", type=int, default=50_000, help="entities on the mock site")
    ap.add_argument("--name", default="load", help="result file name under bench/results")
    args = ap.parse_args(argv)
    if not args.db_url or not args.db_url.startswith("postgresql"):
        ap.error("--db-url (or SGCACHE_TEST_PG_URL) must be a PostgreSQL URL")

    work = common.WORK / "load"
    work.mkdir(parents=True, exist_ok=True)
    state = common.WORK / f"mock-{args.size}.pkl"
    print(f"mock site: {args.size} entities (state {state})", flush=True)
    mock = common.start_mock(state, size=args.size, log=work / "mock.log")
    db_url, drop = common.fresh_db(args.db_url, work, "load")
    server = None
    try:
        env = common.cache_env(mock, db_url, work, None)
        scan = common.full_scan(env)
        print(f"primed: {scan['rows']} rows in {scan['scan_seconds']}s", flush=True)
        url, server = common.start_cache_server(env, work / "serve.log", "--no-sync")
        sg = mock.sg()
        max_ids = {"Shot": sg.find_one("Shot", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])["id"]}
        script = {"script_name": mock.script_name, "script_key": mock.script_key}
        auths = [script, dict(script, sudo_as_login="admin")]
        rss_idle = _proc_status(server.pid)
        load_before = common.loadavg()

        per = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0) for i in range(args.procs)]
        start_at = time.monotonic() + 2.0
        pipes, procs = [], []
        ctx = mp.get_context("spawn")
        for i, n in enumerate(per):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(url, auths, max_ids, n, 1000 * i, start_at, args.warmup,
                                                  args.duration, child))
            p.start()
            pipes.append(parent)
            procs.append(p)
        sampler = Sampler(server.pid)
        time.sleep(max(0.0, start_at + args.warmup - time.monotonic()))
        cpu0, t_measure = _cpu_seconds(server.pid), time.monotonic()
        sampler.start()
        results = [pipe.recv() for pipe in pipes]
        measured = time.monotonic() - t_measure
        cpu = _cpu_seconds(server.pid) - cpu0
        sampler.stop()
        for p in procs:
            p.join(30)
        rss_end = _proc_status(server.pid)
        alive = server.poll() is None
    finally:
        common.stop(server)
        mock.discard()
        drop()

    lat = sorted(x for r in results for x in r["lat"])
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    samples = sampler.samples
    mid = [kb for t, kb in samples if t >= measured / 2]
    out = {
        "clients": args.clients, "duration_s": args.duration, "client_procs": args.procs,
        "site_entities": scan["rows"], "db": "postgresql",
        "requests": len(lat) + sum(errors.values()), "ok": len(lat), "errors": sum(errors.values()),
        "error_kinds": errors, "server_alive": alive,
        "throughput_rps": round(len(lat) / args.duration, 1),
        "latency_ms": {k: round(common.percentile(lat, p) * 1000, 1)
                       for k, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))} if lat else {},
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "server_rss_mb": {"idle": round(rss_idle["VmRSS"] / 1024, 1),
                          "first_half_max": round(max((kb for t, kb in samples if t < measured / 2), default=0) / 1024, 1),
                          "second_half_max": round(max(mid, default=0) / 1024, 1),
                          "end": round(rss_end["VmRSS"] / 1024, 1), "peak": round(rss_end["VmHWM"] / 1024, 1)},
        "server_cpu_s_per_s": round(cpu / measured, 2),
        # other work on the machine competes for the same cores: read the numbers with this
        "loadavg_before_after": [load_before, common.loadavg()],
        "machine": common.machine(),
    }
    path = common.write_result(args.name, out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
    print(f"wrote {path}")
    return 0 if out["errors"] == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
