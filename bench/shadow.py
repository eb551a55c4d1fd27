"""Shadow verification: its cost to callers, and its load on the site, side by side in one run.

Issue 17, item 1. Two `sgcache serve --no-sync` processes on one primed cache, differing
only in `SGCACHE_SHADOW_RATE` (0 and `--rate`, default 0.01), answer the same queries
through the real `shotgun_api3` client, interleaved in small batches (rotating which
goes first), for the two queries of `read_latency.py`:

  by_id     `find("Shot", [["id", "is", N]], fields)`;
  filtered  `find("Shot", [sequence code in 40, status in 4, cut duration between], fields
            + a deep field, order=[code, id], limit=200)`.

Target: the p50 at `--rate` is within noise of rate 0 (reported as a ratio; the run
also reports each server's CPU per request, which hardly stretches with others' load).

Then the budget: a third server at rate 1 (every local answer sampled) takes
`--concurrency` clients for `--duration` s, and the site's own request counter (the
mock's admin `/stats`) says how many calls reached it: shadow calls per second must not
exceed `SGCACHE_SHADOW_BUDGET` (default 2). With `--no-sync` the servers make no other
calls to the site once the clients' credentials are verified (warm-up), and the thumbnail
worker is off, so every call the site counts in a phase is a shadow call (or a read to
classify a difference).

    .venv/bin/python bench/shadow.py                       # SQLite, a 100,000-entity site
    .venv/bin/python bench/shadow.py --db-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from read_latency import RULES as READ_RULES  # noqa: E402
from read_latency import by_id_call, concurrent, filtered_call, make_filtered, served_counts  # noqa: E402

TARGETS = ("rate0", "rate")
#: read_latency's types, and what the permission check reads to place a caller in a group.
RULES = [*READ_RULES, "PermissionRuleSet.*"]


def pools(sg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Active shot ids and filtered queries with at least one row (built through rate 0)."""
    rng = random.Random(args.seed)
    ids = [s["id"] for s in sg.find("Shot", [], [], order=[{"field_name": "id", "direction": "asc"}])]
    codes = [s["code"] for s in sg.find("Sequence", [], ["code"])]
    filtered: list[dict[str, Any]] = []
    while len(filtered) < args.n_filtered + args.warmup:
        q = make_filtered(rng, codes) if len(codes) >= 40 else {
            "codes": codes, "statuses": rng.sample(["wtg", "rdy", "ip", "cbb", "hld", "omt", "fin"], 4),
            "lo": 0, "hi": 10_000}
        if filtered_call(sg, q):
            filtered.append(q)
    return {"by_id": rng.sample(ids, min(len(ids), args.n_id + args.warmup)), "filtered": filtered,
            "n_shots": len(ids), "n_sequences": len(codes)}


def site_reads(mock: common.Mock) -> int:
    return int(httpx.get(mock.admin_url + "/stats", timeout=10).json()["requests"].get("read", 0))


def reset_site_stats(mock: common.Mock) -> None:
    httpx.post(mock.admin_url + "/stats/reset", timeout=10)


def shadow_counts(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for name in ("sgcache_shadow_total{", "sgcache_shadow_skipped_total{"):
            if line.startswith(name):
                label = line.split('"', 2)[1]
                out[f"{name[:-1]}:{label}"] = float(line.rsplit(" ", 1)[1])
    return out


def interleaved(kind: str, clients: dict[str, Any], queries: list[Any], batch: int) -> dict[str, list[float]]:
    call = {"by_id": by_id_call, "filtered": filtered_call}[kind]
    lat: dict[str, list[float]] = {t: [] for t in clients}
    names = list(clients)
    for b, start in enumerate(range(0, len(queries), batch)):
        order = names[b % len(names):] + names[:b % len(names)]
        for t in order:
            for q in queries[start:start + batch]:
                t0 = time.perf_counter()
                call(clients[t], q)
                lat[t].append(time.perf_counter() - t0)
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000, help="mock site size (entities)")
    ap.add_argument("--db-url", default=None, help="SQLAlchemy URL of the cache (default SQLite)")
    ap.add_argument("--rate", type=float, default=0.01, help="shadow rate compared with 0")
    ap.add_argument("--budget", type=float, default=2.0, help="SGCACHE_SHADOW_BUDGET of every server")
    ap.add_argument("--n-id", type=int, default=3000, help="by_id requests per server")
    ap.add_argument("--n-filtered", type=int, default=600, help="filtered requests per server")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--concurrency", type=int, default=4, help="clients in the budget phase")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of the budget phase")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    work = common.WORK
    work.mkdir(parents=True, exist_ok=True)
    db_kind = "sqlite" if not args.db_url else "postgresql"
    result: dict[str, Any] = {"benchmark": "shadow", "db": db_kind, "machine": common.machine(),
                              "command": " ".join([".venv/bin/python", "bench/shadow.py", *sys.argv[1:]]),
                              "settings": {k: v for k, v in vars(args).items() if k != "db_url"},
                              "loadavg": {"start": common.loadavg()}}
    procs: list[Any] = []
    mock = None
    try:
        mock = common.start_mock(work / f"site-{args.size}.pickle", args.size, log=work / "mock-shadow.log")
        # A cache records the site it mirrors (its URL: a new port every run), so prime afresh.
        data_dir = work / f"cache-shadow-{db_kind}-{args.size}"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        rules = data_dir / "rules.txt"
        rules.write_text("\n".join(RULES) + "\n", encoding="utf-8")
        env = common.cache_env(mock, args.db_url, data_dir, rules)
        print("priming the cache ...", flush=True)
        result["scan"] = common.full_scan(env)
        creds = (mock.script_name, mock.script_key)
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        for name, rate in (("rate0", 0.0), ("rate", args.rate), ("rate1", 1.0)):
            # No thumbnail worker: its reads of the site would mix with the shadow calls counted.
            e = {**env, "SGCACHE_SHADOW_RATE": str(rate), "SGCACHE_SHADOW_BUDGET": str(args.budget),
                 "SGCACHE_THUMBNAIL_CACHE_MB": "0"}
            urls[name], p = common.start_cache_server(e, work / f"serve-shadow-{name}.log", "--no-sync")
            procs.append(p)
            pids[name] = p.pid
        clients = {t: common.make_client(urls[t], *creds) for t in TARGETS}
        pool = pools(clients["rate0"], args)
        result["site"] = {"active_shots": pool["n_shots"], "sequences": pool["n_sequences"]}
        for kind in ("by_id", "filtered"):  # warm-up: connections, credentials verified, code paths
            interleaved(kind, clients, pool[kind][:args.warmup], args.batch)

        outcomes0 = {t: served_counts(urls[t]) for t in urls}
        result["sequential"] = {}
        for kind in ("by_id", "filtered"):
            queries = pool[kind][args.warmup:]
            print(f"{kind}: {len(queries)} requests per server, one client, interleaved ...", flush=True)
            reset_site_stats(mock)
            cpu0 = {t: common.cpu_seconds(pids[t]) for t in TARGETS}
            t0 = time.monotonic()
            lat = interleaved(kind, clients, queries, args.batch)
            secs = time.monotonic() - t0
            res = {t: common.summarize(lat[t]) for t in TARGETS}
            for t in TARGETS:
                c1, c0 = common.cpu_seconds(pids[t]), cpu0[t]
                if c1 is not None and c0 is not None:
                    res[t]["server_cpu_ms_per_req"] = round((c1 - c0) * 1000 / len(queries), 3)
            res["p50_ratio"] = round(res["rate"]["p50_ms"] / res["rate0"]["p50_ms"], 3)
            res["site_reads"] = site_reads(mock)
            res["site_reads_per_s"] = round(res["site_reads"] / secs, 2)
            res["seconds"] = round(secs, 1)
            res["loadavg"] = common.loadavg()
            result["sequential"][kind] = res

        # The budget: every answer sampled, several clients, the site counts what reaches it.
        warm = common.make_client(urls["rate1"], *creds)
        by_id_call(warm, pool["by_id"][0])
        time.sleep(1.5)  # let the warm-up's shadow call finish before counting
        reset_site_stats(mock)
        before = shadow_counts(urls["rate1"])
        t0 = time.monotonic()
        conc = concurrent("by_id", urls["rate1"], creds, pool["by_id"], args.concurrency, args.duration)
        window = time.monotonic() - t0
        time.sleep(2.0)  # shadow calls still queued when the clients stop are counted too
        reads = site_reads(mock)
        after = shadow_counts(urls["rate1"])
        # The clients answer for `duration` s (after a start-up pause in which the bucket holds
        # one token at most); shadow calls run while they do and just after.
        result["budget"] = {"rate": 1.0, "budget_per_s": args.budget, "clients": args.concurrency,
                            "answers": conc["requests"], "answers_per_s": conc["req_per_s"],
                            "site_reads": reads, "active_s": args.duration, "counted_s": round(window + 2.0, 1),
                            "site_reads_per_active_s": round(reads / args.duration, 2),
                            "shadow": {k: after.get(k, 0) - before.get(k, 0) for k in after}}
        result["shadow_counts"] = {t: shadow_counts(urls[t]) for t in ("rate0", "rate")}
        after = {t: served_counts(urls[t]) for t in urls}
        result["read_outcomes"] = {t: {k: after[t].get(k, 0) - outcomes0[t].get(k, 0) for k in after[t]}
                                   for t in urls}
    finally:
        for p in procs:
            common.stop(p)
        if mock is not None:
            mock.discard()
    result["loadavg"]["end"] = common.loadavg()
    report(result)
    path = common.write_result(f"shadow-{db_kind}", result)
    print(f"\nwrote {path}")
    return 0 if result["targets_met"] else 1


def report(result: dict[str, Any]) -> None:
    rows = []
    for kind, res in result["sequential"].items():
        for t in TARGETS:
            s = res[t]
            rows.append([kind, "rate 0" if t == "rate0" else f"rate {result['settings']['rate']}",
                         f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}",
                         s.get("server_cpu_ms_per_req", ""), res["site_reads"] if t == "rate" else ""])
    print()
    print(common.table(rows, ["query", "server", "p50 ms", "p90 ms", "p99 ms", "server CPU ms/req",
                              "site calls"]))
    b = result["budget"]
    budget_ok = b["site_reads"] <= b["budget_per_s"] * (b["active_s"] + 1) + 1
    ratios = {k: r["p50_ratio"] for k, r in result["sequential"].items()}
    # Within noise: the p50s of two identical servers differ by a few percent on this machine.
    noise_ok = all(r <= 1.1 for r in ratios.values())
    local_ok = all({k for k, n in o.items() if n} <= {"served"} for o in result["read_outcomes"].values())
    result["targets"] = {"p50 at the rate within 10% of rate 0": noise_ok,
                         "site calls within the budget": budget_ok,
                         "every measured read answered locally": local_ok}
    result["targets_met"] = noise_ok and budget_ok and local_ok
    print(f"read outcomes while measured: {result['read_outcomes']}"
          f"{'' if local_ok else '  (NOT ALL SERVED LOCALLY: the figures mean nothing)'}")
    print(f"\np50 ratio (rate {result['settings']['rate']} / rate 0): {ratios}  "
          f"({'within noise' if noise_ok else 'ABOVE NOISE'})")
    print(f"budget: rate 1, {b['clients']} clients, {b['answers']} answers ({b['answers_per_s']}/s) in "
          f"{b['active_s']:g} s -> {b['site_reads']} site calls in {b['counted_s']} s counted = "
          f"{b['site_reads_per_active_s']}/s while answering (budget {b['budget_per_s']}/s: "
          f"{'kept' if budget_ok else 'EXCEEDED'}); shadow {b['shadow']}")
    print(f"loadavg: {result['loadavg']}")


if __name__ == "__main__":
    sys.exit(main())
