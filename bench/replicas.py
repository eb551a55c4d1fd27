"""Reads through a streaming standby vs on the primary, side by side (issue 14, item 4).

A real PostgreSQL primary and a `pg_basebackup -R` standby on this machine, a mock site
(`--demo N`), one sync leader on the primary, and two `sgcache serve --no-sync` API
servers: P reads on the primary, R reads on the standby (`SGCACHE_DB_READ_URLS`).
Through the real `shotgun_api3` client, in interleaved batches (rotating which goes
first), measure:

  by_id        `find_one("Shot", [["id", "is", N]], fields)` (the point-read path);
  filtered     `find("Shot", [status in, code contains], fields, limit=50)` (worker threads);
  after_write  the caller updates a Shot through the server, then reads it back at once:
               the read's latency (on R it must wait for the standby to replay the write,
               or go to the primary), and whether it saw its own write.

On one machine the standby is as near as the primary, so R/P is the cost of routing
(the probe, the caller's write position, the wait), not the WAN round trips a remote
location saves. Every answer of R is compared with P's.

    .venv/bin/python bench/replicas.py [--demo 2000] [--n 600]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import (  # noqa: E402
    cache_env,
    loadavg,
    machine,
    make_client,
    sgcache,
    start_cache_server,
    stop,
    summarize,
    write_result,
)
from tests.support.pg_pair import PgPair  # noqa: E402
from tests.support.procs import start_mock  # noqa: E402

FIELDS = ["code", "sg_status_list", "description", "sg_sequence"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=int, default=2000)
    ap.add_argument("--n", type=int, default=600, help="requests per kind per server")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--out", default="replicas")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sgb-replicas-"))
    pg = PgPair()
    procs: list[Any] = []
    mock = start_mock("--demo", str(args.demo))
    try:
        load0 = loadavg()
        pg.start()
        env = cache_env(mock, pg.primary_url, work / "leader", None)  # type: ignore[arg-type]
        (work / "leader").mkdir()
        res = sgcache(env, "scan", "--full")
        assert res.returncode == 0, res.stderr[-3000:]
        procs.append(start_cache_server(env, work / "leader.log")[1])  # the sync leader, on the primary
        servers: dict[str, str] = {}
        for name, extra in (("P", {}), ("R", {"SGCACHE_DB_READ_URLS": pg.standby_url})):
            (work / name).mkdir()
            e = {**cache_env(mock, pg.primary_url, work / name, None), **extra}  # type: ignore[arg-type]
            url, proc = start_cache_server(e, work / f"{name}.log", "--no-sync")
            servers[name] = url
            procs.append(proc)
        _wait(lambda: _status(servers["R"])["replicas"]["replicas"][0]["in_use"], "the standby in use")
        clients = {k: make_client(u, mock.script_name, mock.script_key) for k, u in servers.items()}
        site_sg = make_client(mock.url, mock.script_name, mock.script_key)
        shots = [s["id"] for s in site_sg.find("Shot", [], ["id"])]
        rng = random.Random(1)
        mismatches = 0
        lat: dict[str, dict[str, list[float]]] = {k: {"by_id": [], "filtered": [], "after_write": []}
                                                  for k in servers}
        own_write_seen = {k: 0 for k in servers}
        for k in servers:  # warm both up
            for _ in range(20):
                clients[k].find_one("Shot", [["id", "is", rng.choice(shots)]], FIELDS)
        order = list(servers)
        for b in range(0, args.n, args.batch):
            order.reverse()
            ids = [rng.choice(shots) for _ in range(args.batch)]
            statuses = [rng.sample(["ip", "fin", "wtg", "hld", "omt"], 2) for _ in range(args.batch)]
            letters = [rng.choice("abcdefghi") for _ in range(args.batch)]
            answers: dict[str, list[Any]] = {}
            for k in order:
                sg = clients[k]
                got = []
                for i in range(args.batch):
                    t0 = time.perf_counter()
                    got.append(sg.find_one("Shot", [["id", "is", ids[i]]], FIELDS))
                    lat[k]["by_id"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    got.append(sg.find("Shot", [["sg_status_list", "in", statuses[i]],
                                                ["code", "contains", letters[i]]], FIELDS, limit=50,
                                       order=[{"field_name": "id", "direction": "asc"}]))
                    lat[k]["filtered"].append(time.perf_counter() - t0)
                answers[k] = got
            mismatches += sum(a != b for a, b in zip(answers["P"], answers["R"]))
            # a fifth as many writes as reads, each read back at once
            for k in order:
                for i in range(max(1, args.batch // 5)):
                    sid, text = ids[i], f"bench {k} {b} {i}"
                    clients[k].update("Shot", sid, {"description": text})
                    t0 = time.perf_counter()
                    seen = clients[k].find_one("Shot", [["id", "is", sid]], ["description"])
                    lat[k]["after_write"].append(time.perf_counter() - t0)
                    own_write_seen[k] += seen["description"] == text
        load1 = loadavg()
        out: dict[str, Any] = {"benchmark": "replicas", "demo": args.demo, "loadavg_before": load0,
                               "loadavg_after": load1, "machine": machine(), "mismatches_R_vs_P": mismatches,
                               "routing": _status(servers["R"])["replicas"]["reads"]}
        for k in servers:
            out[k] = {kind: summarize(v) for kind, v in lat[k].items() if v}
            out[k]["own_write_seen"] = f"{own_write_seen[k]}/{len(lat[k]['after_write'])}"
        out["ratio_R_over_P_p50"] = {kind: round(out["R"][kind]["p50_ms"] / out["P"][kind]["p50_ms"], 3)
                                     for kind in ("by_id", "filtered", "after_write")}
        path = write_result(args.out, out)
        for kind in ("by_id", "filtered", "after_write"):
            print(f"{kind:12s} p50 P {out['P'][kind]['p50_ms']:.2f} ms, R {out['R'][kind]['p50_ms']:.2f} ms: "
                  f"R/P {out['ratio_R_over_P_p50'][kind]:.2f}")
        print(f"own writes seen: P {out['P']['own_write_seen']}, R {out['R']['own_write_seen']}; "
              f"R vs P mismatches {mismatches}; load {load0} -> {load1}; {path}")
    finally:
        for p in procs:
            stop(p)
        mock.proc.terminate()
        mock.proc.wait(30)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _status(url: str) -> dict[str, Any]:
    return httpx.get(url + "/status.json", timeout=10).json()


def _wait(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not within {timeout}s")


if __name__ == "__main__":
    main()
