"""Read latency and throughput: sgcache vs the mock site vs the HTTP floor, in one run.

Issue 3, item 8. Through the real `shotgun_api3` client, on a mock site of ~100,000
shots (~1,000,000 entities), measure side by side:

  (a) sgcache (`sgcache serve`, SQLite by default, `--db-url` for PostgreSQL),
  (b) the mock site directly,
  (c) the HTTP floor: a minimal Starlette app on uvicorn (same stack and settings as
      `sgcache serve`) answering `info` and a constant `read` result — the same bytes
      sgcache answers — so it costs only HTTP, JSON parsing and the client itself,

for two queries:

  by_id     `find("Shot", [["id", "is", N]], fields)` for random active shots;
  filtered  `find("Shot", [["sg_sequence.Sequence.code", "in", [40 codes]],
            ["sg_status_list", "in", [4 statuses]], ["sg_cut_duration", "between", [lo, hi]]],
            fields + a deep return field, order=[code asc, id asc], limit=200)`,
            a different query every request, each checked to return exactly 200 rows.

Every request is a fresh query (the mock memoizes identical queries; sgcache does not),
and every answer of sgcache is compared with the mock's (same query → same digest).

Phases, each with all targets interleaved in small batches (rotating which goes first):
  1. one client, sequential: p50/p90/p99 and closed-loop requests/s;
  2. `--concurrency` client processes for `--duration` s per target: requests/s.

Each server's CPU time per request in phase 1 is reported too (from /proc): unlike wall
time, it hardly stretches when other people load the machine.

Targets (README): sgcache p50 ≤ 1.5× the floor on by_id; sgcache ≥ 10× faster than the
mock (p50) on filtered.

    .venv/bin/python bench/read_latency.py                      # SQLite
    .venv/bin/python bench/read_latency.py --db-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SHOT_FIELDS = ["code", "sg_status_list", "sg_sequence", "project", "description", "sg_cut_in",
               "sg_cut_out", "sg_cut_duration", "updated_at"]
FILTERED_FIELDS = [*SHOT_FIELDS, "sg_sequence.Sequence.sg_status_list"]
FILTERED_ORDER = [{"field_name": "code", "direction": "asc"}, {"field_name": "id", "direction": "asc"}]
STATUSES = ["wtg", "rdy", "ip", "cbb", "hld", "omt", "fin"]
RULES = ["Project.*", "Sequence.*", "Shot.*", "HumanUser.*", "ApiUser.*", "Group.*"]
TARGETS = ("sgcache", "mock", "floor")


# -- queries -------------------------------------------------------------------------------

def by_id_call(sg: Any, q: int) -> Any:
    return sg.find("Shot", [["id", "is", q]], SHOT_FIELDS)


def filtered_call(sg: Any, q: dict[str, Any]) -> Any:
    filters = [["sg_sequence.Sequence.code", "in", q["codes"]],
               ["sg_status_list", "in", q["statuses"]],
               ["sg_cut_duration", "between", [q["lo"], q["hi"]]]]
    return sg.find("Shot", filters, FILTERED_FIELDS, order=FILTERED_ORDER, limit=200)


CALLS = {"by_id": by_id_call, "filtered": filtered_call}


def digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, default=str, sort_keys=True).encode()).hexdigest()[:16]


def make_filtered(rng: random.Random, codes: list[str]) -> dict[str, Any]:
    lo = rng.randint(24, 90)
    return {"codes": sorted(rng.sample(codes, 40)), "statuses": sorted(rng.sample(STATUSES, 4)),
            "lo": lo, "hi": lo + 150}


def build_pools(sg_cache: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Ids of active shots, and filtered queries that return exactly 200 rows.

    Built through sgcache only, so the mock sees every measured query for the first time.
    """
    rng = random.Random(args.seed)
    shot_ids = [s["id"] for s in sg_cache.find("Shot", [], [], order=[{"field_name": "id", "direction": "asc"}])]
    codes = [s["code"] for s in sg_cache.find("Sequence", [], ["code"])]
    need = {"warm": args.warmup, "seq": args.n_filtered, "conc": args.conc_pool}
    pools: dict[str, Any] = {"n_shots": len(shot_ids), "n_sequences": len(codes), "rejected": 0}
    for name, n in need.items():
        out: list[dict[str, Any]] = []
        while len(out) < n:
            q = make_filtered(rng, codes)
            if len(filtered_call(sg_cache, q)) == 200:
                out.append(q)
            else:
                pools["rejected"] += 1
        pools[f"filtered_{name}"] = out
        pools[f"by_id_{name}"] = rng.sample(shot_ids, {"warm": args.warmup, "seq": args.n_id,
                                                      "conc": args.conc_pool * 5}[name])
    return pools


# -- phases --------------------------------------------------------------------------------

def sequential(kind: str, clients: dict[str, Any], queries: list[Any], batch: int,
               check: bool) -> tuple[dict[str, list[float]], dict[str, list[str]], list[int]]:
    """Every target runs the same queries, interleaved in batches; returns latencies, digests."""
    call = CALLS[kind]
    lat: dict[str, list[float]] = {t: [] for t in clients}
    dig: dict[str, list[str]] = {t: [] for t in clients}
    sizes: list[int] = []
    names = list(clients)
    for b, start in enumerate(range(0, len(queries), batch)):
        chunk = queries[start:start + batch]
        order = names[b % len(names):] + names[:b % len(names)]
        for t in order:
            sg = clients[t]
            for q in chunk:
                t0 = time.perf_counter()
                res = call(sg, q)
                lat[t].append(time.perf_counter() - t0)
                if check and t != "floor":
                    dig[t].append(digest(res))
                    if t == "sgcache":
                        sizes.append(len(res))
    return lat, dig, sizes


def _worker(url: str, name: str, key: str, kind: str, queries: list[Any], start_at: float,
            duration: float, out: Any) -> None:
    sg = common.make_client(url, name, key)
    by_id_call(sg, 1)  # connect and read `info` before the window opens
    call = CALLS[kind]
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + duration
    n, lat, i = 0, [], 0
    while time.time() < end:
        t0 = time.perf_counter()
        call(sg, queries[i % len(queries)])
        dt = time.perf_counter() - t0
        i += 1
        if time.time() <= end:
            n += 1
            lat.append(dt)
    out.put((n, lat))


def concurrent(kind: str, url: str, creds: tuple[str, str], queries: list[Any], procs: int,
               duration: float) -> dict[str, Any]:
    """`procs` client processes, each with its own client, for `duration` seconds."""
    ctx = mp.get_context("fork")
    q: Any = ctx.Queue()
    start_at = time.time() + 2.0 + 0.5 * procs
    workers = [ctx.Process(target=_worker, args=(url, *creds, kind, queries[w::procs], start_at,
                                                 duration, q)) for w in range(procs)]
    for w in workers:
        w.start()
    results = [q.get(timeout=duration + 600) for _ in workers]
    for w in workers:
        w.join(30)
    n = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    return {"clients": procs, "seconds": duration, "requests": n, "req_per_s": round(n / duration, 1),
            "p50_ms": round(common.percentile(lat, 50) * 1000, 3) if lat else None,
            "p99_ms": round(common.percentile(lat, 99) * 1000, 3) if lat else None}


# -- set-up --------------------------------------------------------------------------------

def prepare_cache(mock: common.Mock, args: argparse.Namespace, work: Path) -> tuple[dict[str, str], dict]:
    """A cache of the needed types, primed once per (state file, rules, database)."""
    kind = "sqlite" if not args.db_url else args.db_url.split(":", 1)[0].split("+")[0]
    data_dir = work / f"cache-{kind}"
    rules = None
    if not args.all_types:
        data_dir.mkdir(parents=True, exist_ok=True)
        rules = data_dir / "rules.txt"
        rules.write_text("\n".join(RULES) + "\n", encoding="utf-8")
    env = common.cache_env(mock, args.db_url, data_dir, rules)
    st = Path(args.state).stat()
    # the database layout is the store's, fields' and scan's business: re-prime when they change
    # (their content, committed or not, since the tree may hold uncommitted edits)
    layout = hashlib.sha1(b"".join((common.REPO / "sgcache" / f).read_bytes()
                                   for f in ("store/tables.py", "store/field_types.py",
                                             "sync/scan.py"))).hexdigest()
    key = {"state": str(args.state), "size": st.st_size, "mtime": st.st_mtime, "db_url": args.db_url,
           "rules": None if args.all_types else RULES, "layout": layout}
    marker = data_dir / "primed.json"
    reuse = (not args.rescan and args.db_url is None and marker.exists()
             and json.loads(marker.read_text())["key"] == key)
    if reuse:
        primed = json.loads(marker.read_text())
        # The same saved site, on a new port: the cache records its site's URL.
        env["SGCACHE_SITE_MOVED_FROM"] = primed.get("site", "")
        scan = primed["scan"]
        scan["reused"] = True
        return env, scan
    if args.db_url is None and data_dir.exists():
        shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        if rules:
            rules.write_text("\n".join(RULES) + "\n", encoding="utf-8")
    print(f"priming the cache: sgcache scan --full ({'all types' if args.all_types else ', '.join(RULES)})",
          flush=True)
    scan = common.full_scan(env)
    scan["types"] = "all" if args.all_types else RULES
    marker.write_text(json.dumps({"key": key, "scan": scan, "site": mock.url}), encoding="utf-8")
    scan["reused"] = False
    return env, scan


def capture_floor(sg_cache: Any, pools: dict[str, Any]) -> dict[str, str]:
    """The exact bodies sgcache answers, for the floor to send back."""
    rec = common.Recorder(sg_cache)
    by_id_call(sg_cache, pools["by_id_warm"][0])
    filtered_call(sg_cache, pools["filtered_warm"][0])
    info = json.dumps(sg_cache.info())
    return {"info": info, "read:1": rec.bodies[0], "read:3": rec.bodies[1], "read": rec.bodies[1]}


def served_counts(cache_url: str) -> dict[str, float]:
    """sgcache_requests_total for read, by outcome (to prove every read was served locally)."""
    import httpx
    out: dict[str, float] = {}
    for line in httpx.get(cache_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("sgcache_requests_total{") and 'method="read"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    return out


def busy_processes() -> list[str]:
    """Other CPU consumers at the time (the machine is shared)."""
    res = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True)
    return [line.strip()[:140] for line in res.stdout.splitlines()[1:8]]


# -- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", default=str(common.WORK / "site-1m.pickle"),
                    help="mock site state file (generated on first use)")
    ap.add_argument("--size", type=int, default=common.DEFAULT_SIZE, help="demo size if generating")
    ap.add_argument("--db-url", default=None, help="SQLAlchemy URL of the cache (default SQLite)")
    ap.add_argument("--all-types", action="store_true", help="cache the whole site, not just the needed types")
    ap.add_argument("--rescan", action="store_true", help="re-prime the SQLite cache even if primed")
    ap.add_argument("--n-id", type=int, default=1000, help="by_id requests per target (sequential)")
    ap.add_argument("--n-filtered", type=int, default=300, help="filtered requests per target (sequential)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=20, help="requests per target before switching")
    ap.add_argument("--concurrency", type=int, default=4, help="client processes in phase 2 (0: skip)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per target in phase 2")
    ap.add_argument("--conc-pool", type=int, default=150, help="distinct filtered queries for phase 2")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None, help="result name under bench/results/ (default by db)")
    args = ap.parse_args()

    work = common.WORK
    work.mkdir(parents=True, exist_ok=True)
    db_kind = "sqlite" if not args.db_url else "postgresql"
    out_name = args.out or f"read_latency-{db_kind}"
    result: dict[str, Any] = {"benchmark": "read_latency", "db": db_kind, "machine": common.machine(),
                              "command": " ".join([".venv/bin/python", "bench/read_latency.py", *sys.argv[1:]]),
                              "settings": {k: v for k, v in vars(args).items() if k != "db_url"},
                              "loadavg": {"start": common.loadavg()}, "busy_at_start": busy_processes()}
    procs: list[Any] = []
    mock = None
    try:
        print(f"starting the mock site from {args.state} ...", flush=True)
        mock = common.start_mock(Path(args.state), args.size, log=work / "mock.log")
        result["mock_startup_s"] = round(mock.startup_s, 1)
        env, scan = prepare_cache(mock, args, work)
        result["scan"] = scan
        print(f"cache: {scan}", flush=True)
        cache_url, cproc = common.start_cache_server(env, work / f"serve-{db_kind}.log", "--no-sync")
        procs.append(cproc)
        creds = (mock.script_name, mock.script_key)
        sg_cache = common.make_client(cache_url, *creds)
        t0 = time.monotonic()
        pools = build_pools(sg_cache, args)
        print(f"query pools built in {time.monotonic() - t0:.1f}s: {pools['n_shots']} active shots, "
              f"{pools['n_sequences']} sequences, {pools['rejected']} candidate filters rejected", flush=True)
        result["site"] = {"active_shots": pools["n_shots"], "sequences": pools["n_sequences"]}
        floor_url, fproc = common.start_floor(capture_floor(sg_cache, pools), work)
        procs.append(fproc)
        urls = {"sgcache": cache_url, "mock": mock.url, "floor": floor_url}
        clients = {t: common.make_client(urls[t], *creds) for t in TARGETS}
        pids = {"sgcache": cproc.pid, "mock": mock.proc.pid, "floor": fproc.pid}
        before = served_counts(cache_url)

        # warm-up: connections, `info`, code paths, caches of the servers
        for kind in ("by_id", "filtered"):
            sequential(kind, clients, pools[f"{kind}_warm"], args.batch, check=False)

        result["sequential"] = {}
        checks: dict[str, Any] = {}
        for kind, n in (("by_id", args.n_id), ("filtered", args.n_filtered)):
            print(f"phase 1, {kind}: {n} requests per target, one client ...", flush=True)
            la0 = common.loadavg()
            cpu0 = {t: common.cpu_seconds(pids[t]) for t in TARGETS}
            lat, dig, sizes = sequential(kind, clients, pools[f"{kind}_seq"], args.batch, check=True)
            result["sequential"][kind] = {t: common.summarize(lat[t]) for t in TARGETS}
            for t in TARGETS:  # server CPU per request: does not stretch with others' load
                c1 = common.cpu_seconds(pids[t])
                if c1 is not None and cpu0[t] is not None:
                    result["sequential"][kind][t]["server_cpu_ms_per_req"] = round((c1 - cpu0[t]) * 1000 / n, 3)
            result["sequential"][kind]["loadavg"] = [la0, common.loadavg()]
            mismatches = sum(1 for a, b in zip(dig["sgcache"], dig["mock"]) if a != b)
            checks[kind] = {"compared": len(dig["sgcache"]), "mismatches": mismatches,
                            "rows_min": min(sizes), "rows_max": max(sizes)}
            print(f"  same answers as the mock: {len(dig['sgcache']) - mismatches}/{len(dig['sgcache'])}; "
                  f"rows per answer {min(sizes)}..{max(sizes)}", flush=True)
        result["checks"] = checks

        if args.concurrency:
            result["concurrent"] = {}
            for kind in ("by_id", "filtered"):
                result["concurrent"][kind] = {}
                for t in TARGETS:
                    print(f"phase 2, {kind}: {args.concurrency} clients x {args.duration}s on {t} ...", flush=True)
                    result["concurrent"][kind][t] = concurrent(kind, urls[t], creds, pools[f"{kind}_conc"],
                                                               args.concurrency, args.duration)
                    result["concurrent"][kind][t]["loadavg"] = common.loadavg()

        after = served_counts(cache_url)
        result["cache_read_outcomes"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    finally:
        for p in procs:
            common.stop(p)
        if mock is not None:
            mock.discard()
    result["loadavg"]["end"] = common.loadavg()
    report(result)
    path = common.write_result(out_name, result)
    print(f"\nwrote {path}")
    return 0 if result["targets_met"] else 1


def report(result: dict[str, Any]) -> None:
    seq = result["sequential"]
    rows = []
    for kind in ("by_id", "filtered"):
        for t in TARGETS:
            s = seq[kind][t]
            c = result.get("concurrent", {}).get(kind, {}).get(t, {})
            rows.append([kind, t, f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}",
                         f"{s['req_per_s_1client']:.0f}", f"{c.get('req_per_s', float('nan')):.0f}",
                         s.get("server_cpu_ms_per_req", "")])
    conc = result.get("settings", {}).get("concurrency")
    print()
    print(common.table(rows, ["query", "target", "p50 ms", "p90 ms", "p99 ms", "req/s (1 client)",
                              f"req/s ({conc} clients)", "server CPU ms/req"]))
    r_id = seq["by_id"]["sgcache"]["p50_ms"] / seq["by_id"]["floor"]["p50_ms"]
    r_f = seq["filtered"]["mock"]["p50_ms"] / seq["filtered"]["sgcache"]["p50_ms"]
    r_f99 = seq["filtered"]["mock"]["p99_ms"] / seq["filtered"]["sgcache"]["p99_ms"]
    r_id_mock = seq["by_id"]["mock"]["p50_ms"] / seq["by_id"]["sgcache"]["p50_ms"]
    r_f_floor = seq["filtered"]["sgcache"]["p50_ms"] / seq["filtered"]["floor"]["p50_ms"]
    result["ratios"] = {"by_id_sgcache_over_floor_p50": round(r_id, 3),
                        "by_id_mock_over_sgcache_p50": round(r_id_mock, 2),
                        "filtered_mock_over_sgcache_p50": round(r_f, 2),
                        "filtered_mock_over_sgcache_p99": round(r_f99, 2),
                        "filtered_sgcache_over_floor_p50": round(r_f_floor, 3)}
    ok_id, ok_f = r_id <= 1.5, r_f >= 10
    result["targets"] = {"by_id: sgcache p50 <= 1.5x floor": ok_id, "filtered: sgcache >= 10x faster than mock (p50)": ok_f}
    result["targets_met"] = ok_id and ok_f
    print()
    print(f"by_id    sgcache p50 / floor p50  = {r_id:.2f}x  (target <= 1.5x: {'met' if ok_id else 'MISSED'})")
    print(f"filtered mock p50 / sgcache p50   = {r_f:.1f}x  (target >= 10x: {'met' if ok_f else 'MISSED'}); "
          f"p99 {r_f99:.1f}x")
    print(f"by_id    mock p50 / sgcache p50   = {r_id_mock:.1f}x;  filtered sgcache p50 / floor p50 = {r_f_floor:.2f}x")
    print(f"checks: {result['checks']}; cache read outcomes: {result.get('cache_read_outcomes')}")
    print(f"scan: {result['scan']}")
    print(f"loadavg: {result['loadavg']}")


if __name__ == "__main__":
    sys.exit(main())
