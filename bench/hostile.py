"""Hostile load: honest clients' reads by id while 300 hostile connections attack (issue 11).

Starts the mock site (a demo studio kept as a `--state` file), primes a fresh SQLite
cache with `sgcache scan --full`, starts `sgcache serve --no-sync` with its defaults,
then runs two phases of `--duration` seconds each, side by side in one run (alternating in
`--rounds` (3) rounds, so the machine's other load falls on both):

1. **alone**: `--honest` (4) client processes, each a real `shotgun_api3.Shotgun`
   doing `find_one("Shot", [["id", "is", N]], fields)` in a closed loop, N random;
2. **hostile**: the same honest clients while `--hostile` (300) connections attack from
   one process (at `nice 10`, so on a small machine the attacker's own CPU use does not
   stand in for the server's handling of it; the mock site, another machine in real
   life, runs at `nice 10` too):
   - slow api3 bodies: `POST /api3/json` declaring 10 MB, one byte every 2 s;
   - slow uploads: `POST /upload/...` declaring 10 MB, one byte every 2 s;
   - large bodies: `--large-mb` (8) MB of `[{},{},…]`, no credentials or the attacker's
     script with a wrong key at the head, sent again as soon as each is answered;
   - deep paths: reads with a valid key whose return field is `created_by.HumanUser.`
     repeated `--hops` (1000) times, again and again.

   A hostile party with a valid key is a *different* script from the honest farm's: the
   mock site is started with a second ApiUser (`ATTACKER`, API Admin like the farm's) and
   the attacker uses it; honest clients and attacker still share the address 127.0.0.1.
   (Before 2026-12-02 19:30 UTC the deep reads used the farm's own script and key.)

Reports per phase: the honest clients' latency percentiles, throughput and errors (any
answer but the right entity), the server's own time for those reads (its access log), the
server's peak RSS in the phase (VmHWM from /proc,
reset at the start of each phase through /proc/PID/clear_refs) and CPU, the hostile
connections' outcomes by kind, and the load average. Targets: 0 honest errors, honest
p99 within 3x of the alone phase, server peak RSS <= 500 MB.

    .venv/bin/python bench/hostile.py                       # ~4 minutes with priming
    .venv/bin/python bench/hostile.py --duration 20 --hostile 60    # quick look
    .venv/bin/python bench/hostile.py --per-kind    # + a phase per kind (its 75 connections), same rounds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: The kinds of hostile connection, shared out evenly.
KINDS = ("slow-api3", "slow-upload", "large", "deep")
#: The attacker's own script on the mock site (a valid key, not the farm's).
ATTACKER = ("hostile_tool", "hostile-key-3d1f0b7a9c2e4d68")
FIELDS = ["code", "sg_status_list", "sg_sequence", "sg_cut_in", "sg_cut_out", "description", "project",
          "created_at", "updated_at"]


# -- honest clients ------------------------------------------------------------------------

def _honest(url: str, script: tuple[str, str], ids: list[int], seed: int, start_at: float, warmup: float,
            duration: float, conn: Any) -> None:
    """One real client in a closed loop of finds by id; sends back latencies and errors."""
    sg = common.make_client(url, *script)
    rng = random.Random(seed)
    lat: list[float] = []
    errors: dict[str, int] = {}
    time.sleep(max(0.0, start_at - time.monotonic()))
    measure_from, stop_at = start_at + warmup, start_at + warmup + duration
    while (now := time.monotonic()) < stop_at:
        i = rng.choice(ids)
        t0 = time.perf_counter()
        kind = "ok"
        try:
            got = sg.find_one("Shot", [["id", "is", i]], FIELDS)
            if not got or got.get("id") != i:
                kind = "wrong answer"
        except Exception as e:  # counted, never fatal
            kind = f"{type(e).__name__}: {str(e)[:80]}"
        dt = time.perf_counter() - t0
        if now < measure_from:
            continue
        if kind == "ok":
            lat.append(dt)
        else:
            errors[kind] = errors.get(kind, 0) + 1
    conn.send({"lat": lat, "errors": errors})
    conn.close()


# -- hostile connections ---------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


def _outcome(status: int, body: bytes) -> str:
    if status != 200:
        return f"http {status}"
    try:
        data = json.loads(body)
    except ValueError:
        return "not json"
    if isinstance(data, dict) and data.get("exception"):
        return f"fault {data.get('error_code')}: {str(data.get('message'))[:60]}"
    return "answered"


async def _slow(host: str, port: int, path: str, stop: float, tally: Tally) -> None:
    """Declare 10 MB, send a byte every 2 s; start again when the server lets go."""
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: 10000000\r\n\r\n".encode())
            writer.write(b'{"method_name": "read", "params": [')
            await writer.drain()
            while time.monotonic() < stop:
                await asyncio.sleep(2.0)
                if reader.at_eof():
                    break
                writer.write(b" ")
                await writer.drain()
            tally.add("slow: held to the end" if time.monotonic() >= stop else "slow: let go by the server")
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            tally.add("slow: cut off by the server")
            await asyncio.sleep(0.5)


async def _repeat(host: str, port: int, body: bytes, label: str, stop: float, tally: Tally) -> None:
    """Send `body` to /api3/json again as soon as it is answered (one keep-alive connection)."""
    head = (f"POST /api3/json HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            alive = True
            while alive and time.monotonic() < stop:
                writer.write(head)
                writer.write(body)
                await writer.drain()
                status, answer, alive = await asyncio.wait_for(_response(reader), timeout=max(1.0, stop - time.monotonic()))
                tally.add(f"{label}: {_outcome(status, answer)}")
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as e:
            tally.add(f"{label}: {type(e).__name__}")
            await asyncio.sleep(0.2)


def _hostile(url: str, script: tuple[str, str], n: int, large_mb: int, hops: int, start_at: float,
             duration: float, conn: Any, kinds: tuple[str, ...] = KINDS) -> None:
    os.nice(10)  # the attack shares the 2 cores: it gets what the server and honest clients leave
    host, port = url.removeprefix("http://").split(":")
    objects = b"[" + b",".join([b"{}"] * (large_mb * 1_000_000 // 3)) + b"]"
    no_auth = b'{"method_name": "batch", "params": [' + objects + b"]}"
    bad_key = (b'{"method_name": "batch", "params": [{"script_name": "%s", "script_key": "not-the-key"}, '
               % ATTACKER[0].encode() + objects + b"]}")
    deep = json.dumps({"method_name": "read", "params": [
        {"script_name": ATTACKER[0], "script_key": ATTACKER[1]},
        {"type": "Shot", "return_fields": ["code", ".".join(["created_by.HumanUser"] * hops) + ".name"],
         "filters": {"logical_operator": "and", "conditions": [{"path": "id", "relation": "is", "values": [1]}]},
         "return_only": "active", "paging": {"entities_per_page": 1, "current_page": 1}}]}).encode()
    per = {k: n // len(kinds) + (1 if i < n % len(kinds) else 0) for i, k in enumerate(kinds)}
    tally = Tally()

    async def run() -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        stop = start_at + duration
        jobs = [_slow(host, int(port), "/api3/json", stop, tally) for _ in range(per.get("slow-api3", 0))]
        jobs += [_slow(host, int(port), "/upload/Shot/1/sg_uploaded_movie", stop, tally)
                 for _ in range(per.get("slow-upload", 0))]
        jobs += [_repeat(host, int(port), no_auth if i % 2 else bad_key, "large", stop, tally)
                 for i in range(per.get("large", 0))]
        jobs += [_repeat(host, int(port), deep, "deep", stop, tally) for _ in range(per.get("deep", 0))]
        await asyncio.gather(*jobs)
    asyncio.run(run())
    conn.send({"connections": per, "outcomes": tally.counts, "large_body_bytes": len(no_auth),
               "deep_field_chars": hops * len("created_by.HumanUser.")})
    conn.close()


# -- the server, from /proc --------------------------------------------------------------------

def _status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _reset_peak(pid: int) -> bool:
    """Start VmHWM afresh (Linux: write 5 to clear_refs); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler(threading.Thread):
    """The largest VmRSS seen, every 0.2 s (a check on VmHWM)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.max_kb = pid, 0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        while not self._stop_flag.wait(0.2):
            try:
                self.max_kb = max(self.max_kb, _status_kb(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(5)


# -- phases --------------------------------------------------------------------------------------

def segment(url: str, server_pid: int, script: tuple[str, str], ids: list[int], args: argparse.Namespace,
            hostile: int, seconds: float, seed: int, kinds: str | None = None) -> dict[str, Any]:
    """`seconds` of the honest clients, beside `hostile` connections if any: raw figures."""
    ctx = mp.get_context("spawn")
    start_at = time.monotonic() + 3.0
    pipes, procs = [], []
    for i in range(args.honest):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_honest, args=(url, script, ids, seed + 1000 * i, start_at, args.warmup,
                                              seconds, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    hostile_pipe = None
    if hostile:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_hostile, args=(url, script, hostile, args.large_mb, args.hops, start_at,
                                               args.warmup + seconds, child, tuple((kinds or args.kinds).split(","))))
        p.start()
        hostile_pipe = parent
        procs.append(p)
    load_before = common.loadavg()
    time.sleep(max(0.0, start_at - time.monotonic()))
    peak_reset = _reset_peak(server_pid)
    wall0 = time.time()
    sampler = RssSampler(server_pid)
    sampler.start()
    cpu0, t0 = common.cpu_seconds(server_pid), time.monotonic()
    results = [pipe.recv() for pipe in pipes]
    hostile_out = hostile_pipe.recv() if hostile_pipe is not None else None
    elapsed = time.monotonic() - t0
    cpu = (common.cpu_seconds(server_pid) or 0) - (cpu0 or 0)
    sampler.stop()
    for p in procs:
        p.join(30)
    status = _status_kb(server_pid)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"lat": [x for r in results for x in r["lat"]], "errors": errors,
            "peak_kb": status["VmHWM"] if peak_reset else sampler.max_kb, "sampled_kb": sampler.max_kb,
            "end_kb": status["VmRSS"], "cpu": cpu, "elapsed": elapsed, "hostile": hostile_out,
            "load": [load_before, common.loadavg()], "wall": [wall0, time.time()]}


def server_side_ms(log: Path, windows: list[list[float]]) -> dict[str, float]:
    """Percentiles of the server's own time for the honest reads (its access log: from the
    handler's start to the answer) within `windows`: what the server adds, apart from
    waiting for a CPU or a turn of the event loop."""
    import datetime as dt
    times: list[float] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if " read Shot served " not in line:
            continue
        try:
            at = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            ms = float(line.split(" served ", 1)[1].split("ms", 1)[0])
        except ValueError:
            continue
        if any(a <= at <= b for a, b in windows):
            times.append(ms)
    times.sort()
    return {k: round(common.percentile(times, p), 2) for k, p in (("p50", 50), ("p99", 99))} if times else {}


def combine(segments: list[dict[str, Any]], seconds: float, hostile: int) -> dict[str, Any]:
    """One phase's figures from its segments."""
    lat = sorted(x for sg in segments for x in sg["lat"])
    errors: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for sg in segments:
        for k, v in sg["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in ((sg["hostile"] or {}).get("outcomes") or {}).items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {
        "hostile_connections": hostile,
        "honest": {"requests": len(lat) + sum(errors.values()), "errors": sum(errors.values()),
                   "error_kinds": errors, "throughput_rps": round(len(lat) / seconds, 1),
                   "latency_ms": {k: round(common.percentile(lat, p) * 1000, 2)
                                  for k, p in (("p50", 50), ("p90", 90), ("p99", 99))} if lat else {},
                   "max_ms": round(lat[-1] * 1000, 1) if lat else None},
        "server": {"peak_rss_mb": round(max(sg["peak_kb"] for sg in segments) / 1024, 1),
                   "max_sampled_rss_mb": round(max(sg["sampled_kb"] for sg in segments) / 1024, 1),
                   "end_rss_mb": round(segments[-1]["end_kb"] / 1024, 1),
                   "cpu_s_per_s": round(sum(sg["cpu"] for sg in segments) / sum(sg["elapsed"] for sg in segments), 2)},
        "hostile": ({**(segments[0]["hostile"] or {}), "outcomes": outcomes} if hostile else None),
        "loadavg_per_segment": [sg["load"] for sg in segments],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured per phase")
    ap.add_argument("--rounds", type=int, default=3,
                    help="the phases alternate in this many rounds (the machine's other load falls on both)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--honest", type=int, default=4, help="honest client processes")
    ap.add_argument("--hostile", type=int, default=300, help="hostile connections")
    ap.add_argument("--kinds", default=",".join(KINDS), help="hostile kinds to run (default: all four)")
    ap.add_argument("--large-mb", type=int, default=8, help="size of each large body")
    ap.add_argument("--hops", type=int, default=1000, help="created_by.HumanUser. repeats in a deep path")
    ap.add_argument("--size", type=int, default=20_000, help="entities on the mock site")
    ap.add_argument("--per-kind", action="store_true",
                    help="also a phase per kind, with that kind's share of the connections (hostile/4 each)")
    ap.add_argument("--name", default="hostile", help="result file name under bench/results")
    args = ap.parse_args(argv)

    work = common.WORK / "hostile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    state = common.WORK / f"mock-{args.size}.pkl"
    print(f"mock site: {args.size} entities (state {state})", flush=True)
    mock = common.start_mock(state, size=args.size, log=work / "mock.log",
                             extra=("--api-user", f"{ATTACKER[0]}:{ATTACKER[1]}"))
    os.setpriority(os.PRIO_PROCESS, mock.proc.pid, 10)  # the site is another machine in real life
    server = None
    seconds = args.duration / args.rounds
    alone_segs: list[dict[str, Any]] = []
    hostile_segs: list[dict[str, Any]] = []
    kind_list = args.kinds.split(",")
    share = args.hostile // len(kind_list)
    kind_segs: dict[str, list[dict[str, Any]]] = {k: [] for k in kind_list} if args.per_kind else {}
    try:
        env = common.cache_env(mock, None, work, None)
        scan = common.full_scan(env)
        print(f"primed: {scan['rows']} rows in {scan['scan_seconds']}s", flush=True)
        url, server = common.start_cache_server(env, work / "serve.log", "--no-sync")
        ids = [e["id"] for e in mock.sg().find("Shot", [], ["id"])]
        script = (mock.script_name, mock.script_key)
        idle = _status_kb(server.pid)
        print(f"server idle: {idle['VmRSS'] / 1024:.0f} MB; {args.rounds} rounds of {seconds:.0f} s alone, "
              f"{seconds:.0f} s beside {args.hostile} hostile connections", flush=True)
        phases: list[tuple[str, int, list[dict[str, Any]], str | None]] = [
            ("alone", 0, alone_segs, None), ("hostile", args.hostile, hostile_segs, None),
            *((k, share, segs, k) for k, segs in kind_segs.items())]
        for r in range(args.rounds):
            for name, n, segs, kinds in phases:
                segs.append(segment(url, server.pid, script, ids, args, n, seconds, 100 * r + n, kinds))
                lat = sorted(segs[-1]["lat"])
                print(f"  round {r + 1} {name}: {len(lat)} ok, {sum(segs[-1]['errors'].values())} errors, "
                      f"p99 {common.percentile(lat, 99) * 1000:.1f} ms, peak RSS {segs[-1]['peak_kb'] / 1024:.0f} MB, "
                      f"load {segs[-1]['load'][1][:1]}", flush=True)
        alive = server.poll() is None
    finally:
        common.stop(server)
        mock.discard()

    alone = combine(alone_segs, args.duration, 0)
    attacked = combine(hostile_segs, args.duration, args.hostile)
    per_kind = {k: combine(segs, args.duration, share) for k, segs in kind_segs.items()}
    for phase_out, segs in ((alone, alone_segs), (attacked, hostile_segs)):
        phase_out["honest"]["server_side_ms"] = server_side_ms(work / "serve.log", [sg["wall"] for sg in segs])
    p99_alone = alone["honest"]["latency_ms"].get("p99")
    p99_hostile = attacked["honest"]["latency_ms"].get("p99")
    ratio = round(p99_hostile / p99_alone, 2) if p99_alone and p99_hostile else None
    peak = attacked["server"]["peak_rss_mb"]
    out = {
        "settings": {"duration_s": args.duration, "rounds": args.rounds, "honest_clients": args.honest,
                     "hostile_connections": args.hostile, "hostile_kinds": args.kinds, "large_body_mb": args.large_mb, "deep_hops": args.hops,
                     "db": "sqlite", "site_entities": scan["rows"]},
        "server_idle_rss_mb": round(idle["VmRSS"] / 1024, 1),
        "alone": alone, "hostile": attacked, "server_alive": alive,
        "per_kind": {k: {"connections": share, "honest": v["honest"], "server": v["server"],
                         "outcomes": (v["hostile"] or {}).get("outcomes"),
                         "p99_ratio": round(v["honest"]["latency_ms"]["p99"] / p99_alone, 2)
                         if p99_alone and v["honest"]["latency_ms"] else None,
                         "loadavg_per_segment": v["loadavg_per_segment"]} for k, v in per_kind.items()},
        "summary": {"honest_errors": attacked["honest"]["errors"], "honest_p99_ms_alone": p99_alone,
                    "honest_p99_ms_hostile": p99_hostile, "p99_ratio": ratio, "server_peak_rss_mb": peak,
                    "targets_met": {"no_honest_errors": attacked["honest"]["errors"] == 0,
                                    "p99_within_3x": ratio is not None and ratio <= 3.0,
                                    "peak_rss_at_most_500_mb": peak is not None and peak <= 500}},
        "machine": common.machine(),
    }
    path = common.write_result(args.name, out)
    print(json.dumps(out["summary"], indent=1))
    print(f"wrote {path}")
    return 0 if all(out["summary"]["targets_met"].values()) and alive else 1


if __name__ == "__main__":
    sys.exit(main())
