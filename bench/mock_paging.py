"""Paging speed of the mock site: 1,000,000 entities, 500 per page, ordered by id.

Issue 2, item 7 (target ≥ 20,000 entities/s). The real `shotgun_api3` client reads
every active entity of every type of a ~1,000,000-entity demo site, ordered by id,
500 per page (the site's `api_max_entities_per_page`), in two ways:

  page    the client's own paging: `sg.find(type, [], fields, order=[id asc])`, which
          asks for page 1, 2, 3 … until `has_next_page` is false;
  keyset  what `sgcache scan` does: `sg.find(type, [["id", "greater_than", last]],
          fields, order=[id asc], limit=500)` until a short page.

and with two sets of return fields:

  few     `id` plus, where the type has them, code/name/content, project, created_at,
          updated_at (a typical tool query);
  all     every field of the type (what a full scan of the cache reads; much more JSON).

It also measures the client alone (`client_ceiling`): the same client decoding
recorded pages again without any server, the ceiling for any server.

Each (mode, fields) pass covers up to `--limit` entities (or its own `:limit`), types
largest first, and reports entities/s over wall-clock time (the client's JSON decoding
included). The default runs the 1,000,000-entity pass with few fields, and shorter
passes for all fields and keyset paging (both far slower on the mock).

    .venv/bin/python bench/mock_paging.py
    .venv/bin/python bench/mock_paging.py --passes page:few,keyset:all:50000 --limit 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FEW = ("code", "name", "content", "project", "created_at", "updated_at")
ORDER = [{"field_name": "id", "direction": "asc"}]
TARGET = 20_000.0


def type_fields(sg: Any, etype: str, which: str) -> list[str]:
    fields = sg.schema_field_read(etype)
    if which == "all":
        return sorted(fields)
    return ["id", *[f for f in FEW if f in fields]]


def page_type(sg: Any, etype: str, fields: list[str], mode: str, budget: int) -> tuple[int, int]:
    """Read up to `budget` entities of one type; returns (entities, requests)."""
    if mode == "page":
        if budget >= 10**12:
            rows = sg.find(etype, [], fields, order=ORDER)
        else:
            rows = sg.find(etype, [], fields, order=ORDER, limit=budget)
        return len(rows), max(1, -(-len(rows) // 500) + (1 if len(rows) % 500 == 0 else 0))
    n, requests, last = 0, 0, 0
    while n < budget:
        page = sg.find(etype, [["id", "greater_than", last]], fields, order=ORDER, limit=500)
        requests += 1
        n += len(page)
        if len(page) < 500:
            break
        last = page[-1]["id"]
    return min(n, budget), requests


def client_ceiling(mock_sg: Any, url: str, creds: tuple[str, str], etype: str, which: str,
                   pages: int = 4, repeat: int = 5) -> dict[str, Any]:
    """Entities/s of the client alone: decode recorded pages again, with no server or socket.

    Replays what `_call_rpc` and `find` do with a response (`_decode_response`,
    `_transform_inbound`, `_parse_records`): the most any server can get out of this client.
    """
    sg = common.make_client(url, *creds)
    rec = common.Recorder(sg)
    fields = type_fields(mock_sg, etype, which)
    sg.find(etype, [], fields, order=ORDER, limit=500 * pages)
    raw = [r for r in rec.raw if b'"entities"' in (r[1] if isinstance(r[1], bytes) else r[1].encode())]
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for headers, body in raw:
            resp = sg._transform_inbound(sg._decode_response(headers, body))
            n += len(sg._parse_records(resp["results"]["entities"]))
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"type": etype, "fields": which, "entities": n, "seconds": round(secs, 3),
            "cpu_seconds": round(cpu, 3), "entities_per_s": round(n / secs, 0),
            "entities_per_cpu_s": round(n / cpu, 0)}


def run_pass(sg: Any, counts: list[tuple[str, int]], mode: str, which: str, limit: int,
             mock_pid: int | None) -> dict[str, Any]:
    per_type: dict[str, Any] = {}
    total, requests = 0, 0
    la0 = common.loadavg()
    m0 = common.cpu_seconds(mock_pid) if mock_pid else None
    c0 = time.process_time()
    t0 = time.perf_counter()
    for etype, _count in counts:
        if total >= limit:
            break
        fields = type_fields(sg, etype, which)
        t1 = time.perf_counter()
        n, r = page_type(sg, etype, fields, mode, limit - total if limit < 10**12 else 10**12)
        dt = time.perf_counter() - t1
        total += n
        requests += r
        per_type[etype] = {"entities": n, "seconds": round(dt, 2), "fields": len(fields),
                           "entities_per_s": round(n / dt, 0) if dt else None}
        print(f"  {etype:>18}: {n:>8} in {dt:6.1f}s = {n / dt if dt else 0:>8.0f}/s ({len(fields)} fields)",
              flush=True)
    secs = time.perf_counter() - t0
    client_cpu = time.process_time() - c0
    m1 = common.cpu_seconds(mock_pid) if mock_pid else None
    mock_cpu = (m1 - m0) if m0 is not None and m1 is not None else None
    return {"mode": mode, "fields": which, "entities": total, "requests": requests, "seconds": round(secs, 1),
            "entities_per_s": round(total / secs, 0), "target_met": total / secs >= TARGET,
            # CPU seconds do not stretch with other people's load the way wall time does
            "client_cpu_s": round(client_cpu, 1), "mock_cpu_s": round(mock_cpu, 1) if mock_cpu else None,
            "entities_per_mock_cpu_s": round(total / mock_cpu, 0) if mock_cpu else None,
            "entities_per_client_cpu_s": round(total / client_cpu, 0) if client_cpu else None,
            "loadavg": [la0, common.loadavg()], "per_type": per_type}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", default=str(common.WORK / "site-1m.pickle"),
                    help="mock site state file (generated on first use)")
    ap.add_argument("--size", type=int, default=common.DEFAULT_SIZE, help="demo size if generating")
    ap.add_argument("--passes", default="page:few,page:all:200000,keyset:few:20000",
                    help="comma-separated mode:fields[:limit] (mode page|keyset, fields few|all)")
    ap.add_argument("--limit", type=int, default=1_000_000, help="entities per pass (0: everything)")
    ap.add_argument("--out", default="mock_paging", help="result name under bench/results/")
    ap.add_argument("--url", help="page an already running mock instead of starting one")
    ap.add_argument("--script-name", help="with --url")
    ap.add_argument("--script-key", help="with --url")
    args = ap.parse_args()
    limit = args.limit or 10**12

    result: dict[str, Any] = {"benchmark": "mock_paging", "machine": common.machine(),
                              "command": " ".join([".venv/bin/python", "bench/mock_paging.py", *sys.argv[1:]]),
                              "settings": vars(args), "target_entities_per_s": TARGET}
    mock = None
    if args.url:
        sg = common.make_client(args.url, args.script_name, args.script_key)
    else:
        print(f"starting the mock site from {args.state} ...", flush=True)
        mock = common.start_mock(Path(args.state), args.size, log=common.WORK / "mock.log")
        result["mock_startup_s"] = round(mock.startup_s, 1)
        sg = mock.sg()
    try:
        counts = []
        for etype in sorted(sg.schema_entity_read()):
            n = sg.summarize(etype, [], [{"field": "id", "type": "count"}])["summaries"]["id"]
            if n:
                counts.append((etype, n))
        counts.sort(key=lambda c: (-c[1], c[0]))
        result["site"] = {"active_entities": sum(n for _, n in counts), "types": dict(counts)}
        print(f"site: {sum(n for _, n in counts)} active entities in {len(counts)} types", flush=True)
        result["passes"] = []
        for spec in args.passes.split(","):
            mode, which, *rest = spec.split(":")
            n = int(rest[0]) if rest else limit
            print(f"pass {mode}:{which} (up to {n if n < 10**12 else 'all'} entities) ...", flush=True)
            result["passes"].append(run_pass(sg, counts, mode, which, n, mock.proc.pid if mock else None))
        ceiling = []
        url = args.url or mock.url  # type: ignore[union-attr]
        creds = (args.script_name, args.script_key) if args.url else (mock.script_name, mock.script_key)  # type: ignore[union-attr]
        for which in sorted({p["fields"] for p in result["passes"]}, reverse=True):
            ceiling.append(client_ceiling(sg, url, creds, counts[0][0], which))
            print(f"client alone ({counts[0][0]}, {which} fields): {ceiling[-1]['entities_per_s']:.0f} entities/s "
                  f"({ceiling[-1]['entities_per_cpu_s']:.0f} per CPU-second)", flush=True)
        result["client_ceiling"] = ceiling
    finally:
        if mock is not None:
            mock.discard()
    print()
    rows = [[p["mode"], p["fields"], p["entities"], p["requests"], p["seconds"], f"{p['entities_per_s']:.0f}",
             p["entities_per_mock_cpu_s"], p["entities_per_client_cpu_s"],
             "met" if p["target_met"] else "MISSED"] for p in result["passes"]]
    print(common.table(rows, ["mode", "fields", "entities", "requests", "seconds", "entities/s",
                              "per mock CPU-s", "per client CPU-s", f"target {TARGET:.0f}/s"]))
    for c in result.get("client_ceiling", []):
        print(f"client alone, {c['type']} {c['fields']} fields: {c['entities_per_s']:.0f} entities/s wall, "
              f"{c['entities_per_cpu_s']:.0f} per CPU-second")
    path = common.write_result(args.out, result)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
