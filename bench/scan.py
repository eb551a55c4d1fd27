"""Full scan speed (issue 14): the cache's own cost, end to end, against a hosted site's latency.

Side by side in one run, on one mock site (`--size` entities, the built-in schema, every
cached field read):

1. **record** — one full scan in this process through a recording transport: every
   request body and the site's answer, appended to a file (not kept in memory).
2. **mock alone** — the recorded requests sent again to the mock by `--concurrency`
   workers that only read the answers: how fast the site serves exactly these pages.
3. **end to end** — `sgcache scan --full` (a real process, a fresh database: SQLite, or
   one on the PostgreSQL server of `--db-url`) against the mock: entities/s, its CPU
   time and its peak RSS (`wait4`'s ru_maxrss).
   Target: ≥ 0.8× the mock-alone rate (the scan is not the bottleneck); peak RSS ≤ 300 MB.
4. **cache side alone** — a fresh process scans from the recording (an in-process
   transport answering each request with its recorded answer, as `event_apply.py
   --replay` does): entities per CPU-second of the scanning process. Target ≥ 50,000.
5. **latency** — the mock delays every request by `--latency` (0.15 s, a hosted site);
   the recorded page reads are sent to it as in 2 (what the slowed mock itself allows,
   its one-RPC-at-a-time serving added to every request), then `sgcache scan --full`
   runs again. Target ≥ 10,000 entities/s.

    .venv/bin/python bench/scan.py                  # the 1,000,000-entity site
    .venv/bin/python bench/scan.py --size 100000    # a smaller one (its own state file)
    .venv/bin/python bench/scan.py --before DIR     # also a checkout of an earlier commit
    .venv/bin/python bench/scan.py --db-url postgresql+psycopg://USER@HOST:PORT/postgres

`--before DIR` (e.g. `git worktree add --detach DIR <commit>`) runs phases 3-5 for that
checkout too, alternating with this one (before, after), on the same mock and recording:
the figures to compare, side by side in one run.

`--mock-before DIR` compares mocks instead: a second mock, from that checkout, on the same
state file, measured beside this tree's in phase 2 and in phase 5 (the mock alone, and this
tree's scan against each), since how fast the mock serves bounds the latency phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET_CPU = 50_000.0
TARGET_RATIO = 0.8
TARGET_LATENCY = 10_000.0
TARGET_RSS_MB = 300.0
_LEN = struct.Struct("<II")


# -- recording and replaying the site's answers ---------------------------------------------

class Recorder(httpx.AsyncHTTPTransport):
    """Pass requests to the site; append (request body, answer) to a file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.out = open(path, "wb")  # noqa: SIM115 - closed with the transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await super().handle_async_request(request)
        body = await resp.aread()
        self.out.write(_LEN.pack(len(request.content), len(body)) + request.content + body)
        return httpx.Response(resp.status_code, headers=resp.headers, content=body)

    async def aclose(self) -> None:
        await super().aclose()
        self.out.close()  # the client closes its transports: the recording is complete


def read_recording(path: Path) -> tuple[dict[bytes, tuple[int, int]], int]:
    """request body -> (offset, length) of its answer in the file; and the file's size."""
    index: dict[bytes, tuple[int, int]] = {}
    with open(path, "rb") as f:
        data_len = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < data_len:
            f.seek(pos)
            qlen, blen = _LEN.unpack(f.read(_LEN.size))
            req = f.read(qlen)
            index[req] = (pos + _LEN.size + qlen, blen)
            pos += _LEN.size + qlen + blen
    return index, data_len


def replayer(path: Path) -> httpx.MockTransport:
    """Answers each request with its recorded answer, read from the file (memory stays flat)."""
    index, _ = read_recording(path)
    fd = os.open(path, os.O_RDONLY)

    async def handle(request: httpx.Request) -> httpx.Response:
        at = index.get(await request.aread())
        if at is None:
            raise RuntimeError("replay: a request the recorded scan did not make")
        return httpx.Response(200, content=os.pread(fd, at[1], at[0]),
                              headers={"content-type": "application/json"})
    return httpx.MockTransport(handle)


def cache_config(mock: common.Mock, db_url: str, data: Path) -> Any:
    from sgcache.config import load_config
    return load_config(env={"SGCACHE_SHOTGUN_URL": mock.url, "SGCACHE_SCRIPT_NAME": mock.script_name,
                            "SGCACHE_SCRIPT_KEY": mock.script_key, "SGCACHE_DATA_DIR": str(data),
                            "SGCACHE_DB_URL": db_url, "SGCACHE_PERMISSIONS": '{"*": "full"}'})


async def scan_in_process(config: Any, transport: httpx.AsyncBaseTransport, concurrency: int) -> dict[str, Any]:
    from sgcache.runtime import CacheService
    from sgcache.sync.scan import full_scan
    svc = await CacheService.open(config, transport=transport)
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        res = await full_scan(svc.upstream, svc.store, concurrency=concurrency)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    finally:
        await svc.aclose()
    rows = sum(res.rows.values())
    return {"entities": rows, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "entities_per_s": round(rows / wall, 0), "entities_per_cpu_s": round(rows / cpu, 0)}


def replay_main(recording: str, db_url: str, data: str, concurrency: int) -> None:
    """The cache side alone, in a fresh process: prints one JSON line. The script's
    credentials come from the environment: they are in every recorded request."""
    from sgcache.config import load_config
    config = load_config(env={"SGCACHE_SHOTGUN_URL": "http://replay.invalid", "SGCACHE_DATA_DIR": data,
                              "SGCACHE_SCRIPT_NAME": os.environ["SGCACHE_SCRIPT_NAME"],
                              "SGCACHE_SCRIPT_KEY": os.environ["SGCACHE_SCRIPT_KEY"], "SGCACHE_DB_URL": db_url})
    import gc
    gc.freeze()  # as `sgcache scan --full` does (sgcache/cli/scan.py)
    gc.set_threshold(max(gc.get_threshold()[0], 50_000), *gc.get_threshold()[1:])
    out = asyncio.run(scan_in_process(config, replayer(Path(recording)), concurrency))
    print(json.dumps(out), flush=True)


# -- the phases ------------------------------------------------------------------------------

def _git_rev(tree: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                          check=False).stdout.strip()


async def mock_alone(mock: common.Mock, recording: Path, concurrency: int) -> dict[str, Any]:
    """Send the recorded page reads to the mock with `concurrency` workers; count entities."""
    index, _ = read_recording(recording)
    reads = [q for q in index if b'"method_name":"read"' in q]
    todo = list(reads)
    entities = 0
    async with httpx.AsyncClient(base_url=mock.url, timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal entities
            while todo:
                q = todo.pop()
                r = await client.post("/api3/json", content=q, headers={"content-type": "application/json"})
                entities += len(json.loads(r.content)["results"]["entities"])
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        secs = time.perf_counter() - t0
    return {"requests": len(reads), "entities": entities, "seconds": round(secs, 2),
            "entities_per_s": round(entities / secs, 0)}


def mock_alone_with_cpu(mock: common.Mock, recording: Path, concurrency: int) -> dict[str, Any]:
    """`mock_alone`, with the mock process's CPU seconds for it."""
    m0 = common.cpu_seconds(mock.proc.pid)
    alone = asyncio.run(mock_alone(mock, recording, concurrency))
    m1 = common.cpu_seconds(mock.proc.pid)
    alone["mock_cpu_seconds"] = round(m1 - m0, 1) if m0 is not None and m1 is not None else None
    return alone


def run_scan_measured(mock: common.Mock, db_url: str, data: Path, concurrency: int,
                      tree: Path = common.REPO) -> dict[str, Any]:
    """`sgcache scan --full` as a process: its rate, CPU time and peak RSS (wait4's rusage)."""
    import re
    env = common.cache_env(mock, db_url, data, None)
    env["SGCACHE_SCAN_CONCURRENCY"] = str(concurrency)
    env["PYTHONPATH"] = str(tree)
    log = data / "scan.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([common.PY, "-m", "sgcache.cli", "scan", "--full"], cwd=tree, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        peak = [0]
        watcher = threading.Thread(target=_watch_hwm, args=(proc.pid, peak), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError("sgcache scan --full failed:\n" + text[-4000:])
    m = re.search(r"full scan: (\d+) rows in ([\d.]+)s", text)
    rows, secs = (int(m.group(1)), float(m.group(2))) if m else (0, wall)
    cpu = usage.ru_utime + usage.ru_stime
    return {"entities": rows, "scan_seconds": secs, "wall_seconds": round(wall, 2),
            "entities_per_s": round(rows / secs, 0) if secs else None, "cpu_seconds": round(cpu, 2),
            "entities_per_cpu_s": round(rows / cpu, 0) if cpu else None,
            "peak_rss_mb": round(peak[0] / 1024, 1) if peak[0] else None}


def run_scan_in_fresh_db(mock: common.Mock, server_url: str, work: Path, name: str, concurrency: int,
                         tree: Path = common.REPO) -> dict[str, Any]:
    """`run_scan_measured` into a new database (`common.fresh_db`), dropped afterwards."""
    db_url, drop = common.fresh_db(server_url, work, name)
    try:
        return run_scan_measured(mock, db_url, work, concurrency, tree)
    finally:
        drop()


def _watch_hwm(pid: int, peak: list[int]) -> None:
    """The scan's own peak RSS: VmHWM of its process image, read until it exits. (wait4's
    ru_maxrss also counts the image before exec, a copy of this benchmark process, whose
    in-process recording scan can make it the larger.)"""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        if "State:\tZ" in text:  # exited, not yet reaped: its memory is gone
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]))  # kB
        time.sleep(0.05)


def _without_password(url: str) -> str:
    if not url:
        return url
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=common.DEFAULT_SIZE, help="demo site size")
    ap.add_argument("--state", default="", help="mock state file (default: by size under the bench dir)")
    ap.add_argument("--concurrency", type=int, default=4, help="SGCACHE_SCAN_CONCURRENCY")
    ap.add_argument("--latency", type=float, default=0.15)
    ap.add_argument("--out", default="scan")
    ap.add_argument("--before", default="", help="a checkout of an earlier commit, measured alternately")
    ap.add_argument("--mock-before", default="", help="a checkout whose mock is measured beside this one's")
    ap.add_argument("--db-url", default="", help="scan into new databases on this PostgreSQL server "
                    "(default: new SQLite files)")
    ap.add_argument("--replay", nargs=3, metavar=("RECORDING", "DB_URL", "DATA_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replay:
        replay_main(*args.replay, args.concurrency)
        return 0
    state = Path(args.state) if args.state else common.WORK / (
        "site-1m.pickle" if args.size == common.DEFAULT_SIZE else f"site-{args.size}.pickle")
    work = Path(tempfile.mkdtemp(prefix="sgscan-", dir=common.WORK if common.WORK.exists() else None))
    shown = _without_password(args.db_url)  # the results are kept in git
    result: dict[str, Any] = {"benchmark": "scan", "machine": common.machine(),
                              "backend": "postgresql" if args.db_url else "sqlite",
                              "settings": {**vars(args), "db_url": shown},
                              "command": " ".join([".venv/bin/python", "bench/scan.py",
                                                   *(a.replace(args.db_url, shown) if args.db_url else a
                                                     for a in sys.argv[1:])]),
                              "loadavg": {"start": common.loadavg()},
                              "targets": {"entities_per_cpu_s": TARGET_CPU, "end_to_end_vs_mock": TARGET_RATIO,
                                          "latency_entities_per_s": TARGET_LATENCY, "peak_rss_mb": TARGET_RSS_MB}}
    print(f"starting the mock site from {state} ...", flush=True)
    mock = common.start_mock(state, args.size, log=common.WORK / "mock.log")
    try:
        recording = work / "pages.rec"
        print("1. record: a full scan through a recording transport ...", flush=True)
        rec = asyncio.run(scan_in_process(cache_config(mock, f"sqlite:///{work}/record.sqlite", work),
                                          Recorder(recording), args.concurrency))
        rec["recording_mb"] = round(recording.stat().st_size / 1e6, 1)
        result["record"] = rec
        print(f"   {rec}", flush=True)
        (work / "record.sqlite").unlink(missing_ok=True)
        result["loadavg"]["after_record"] = common.loadavg()

        print("2. mock alone: the same page reads, answers only read ...", flush=True)
        alone = mock_alone_with_cpu(mock, recording, args.concurrency)
        result["mock_alone"] = alone
        print(f"   {alone}", flush=True)
        old_mock = None
        if args.mock_before:
            tree = Path(args.mock_before).resolve()
            print(f"   starting the mock of {tree} ...", flush=True)
            old_mock = common.start_mock(state, args.size, log=common.WORK / "mock-before.log", tree=tree)
            old_alone = mock_alone_with_cpu(old_mock, recording, args.concurrency)
            result["mock_before"] = {"git": _git_rev(tree), "mock_alone": old_alone}
            print(f"   mock of {result['mock_before']['git']}: {old_alone}", flush=True)
        result["loadavg"]["after_mock_alone"] = common.loadavg()

        trees = [("before", Path(args.before).resolve()), ("", common.REPO)] if args.before else [("", common.REPO)]
        if args.before:
            result["before"] = {"git": _git_rev(trees[0][1])}

        def put(which: str, key: str, value: dict[str, Any]) -> None:
            (result["before"] if which else result)[key] = value
            print(f"   {which or 'this tree'}: {value}", flush=True)

        print("3. end to end: sgcache scan --full against the mock ...", flush=True)
        for which, tree in trees:
            e2e = run_scan_in_fresh_db(mock, args.db_url, work, "e2e", args.concurrency, tree)
            e2e["vs_mock_alone"] = round(e2e["entities_per_s"] / alone["entities_per_s"], 2)
            e2e["loadavg_after"] = common.loadavg()
            put(which, "end_to_end", e2e)
        result["loadavg"]["after_end_to_end"] = common.loadavg()

        print("4. cache side alone: a fresh process scanning the recording ...", flush=True)
        for which, tree in trees:
            db_url, drop = common.fresh_db(args.db_url, work, "replay")
            try:
                proc = subprocess.run([common.PY, str(tree / "bench" / "scan.py"), "--concurrency",
                                       str(args.concurrency), "--replay", str(recording), db_url, str(work)],
                                      cwd=tree, capture_output=True, text=True, timeout=7200, check=False,
                                      env={**common.cache_env(mock, None, work, None), "PYTHONPATH": str(tree)})
            finally:
                drop()
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-4000:])
            replay = json.loads(proc.stdout.strip().splitlines()[-1])
            replay["loadavg_after"] = common.loadavg()
            put(which, "cache_side", replay)
        result["loadavg"]["after_cache_side"] = common.loadavg()

        print(f"5. latency {args.latency}s: sgcache scan --full against the slowed mock ...", flush=True)
        httpx.post(mock.admin_url + "/faults", json={"latency": args.latency}, timeout=30)
        # What the slowed mock itself allows: its own serving (one RPC at a time) adds to
        # every request's latency, so a slow machine's mock bounds the scan below the target.
        slowed = asyncio.run(mock_alone(mock, recording, args.concurrency))
        result["mock_alone_latency"] = slowed
        print(f"   mock alone at {args.latency}s: {slowed}", flush=True)
        for which, tree in trees:
            lat = run_scan_in_fresh_db(mock, args.db_url, work, "latency", args.concurrency, tree)
            lat["vs_mock_alone"] = round(lat["entities_per_s"] / slowed["entities_per_s"], 2)
            put(which, "latency", {"latency_s": args.latency, **lat, "loadavg_after": common.loadavg()})
        httpx.post(mock.admin_url + "/faults", json={"reset": True}, timeout=30)
        if old_mock is not None:
            httpx.post(old_mock.admin_url + "/faults", json={"latency": args.latency}, timeout=30)
            mb = result["mock_before"]
            mb["mock_alone_latency"] = asyncio.run(mock_alone(old_mock, recording, args.concurrency))
            print(f"   mock of {mb['git']} alone at {args.latency}s: {mb['mock_alone_latency']}", flush=True)
            lat = run_scan_in_fresh_db(old_mock, args.db_url, work, "latency", args.concurrency)
            lat["vs_mock_alone"] = round(lat["entities_per_s"] / mb["mock_alone_latency"]["entities_per_s"], 2)
            mb["latency"] = {"latency_s": args.latency, **lat, "loadavg_after": common.loadavg()}
            print(f"   this tree against the mock of {mb['git']}: {mb['latency']}", flush=True)
        result["loadavg"]["end"] = common.loadavg()
    finally:
        mock.discard()
        if old_mock is not None:
            old_mock.discard()
        shutil.rmtree(work, ignore_errors=True)
    peak = max(result["end_to_end"]["peak_rss_mb"], result["latency"]["peak_rss_mb"])
    result["met"] = {
        "entities_per_cpu_s": result["cache_side"]["entities_per_cpu_s"] >= TARGET_CPU,
        "end_to_end_vs_mock": result["end_to_end"]["vs_mock_alone"] >= TARGET_RATIO,
        "latency_entities_per_s": result["latency"]["entities_per_s"] >= TARGET_LATENCY,
        "peak_rss_mb": peak <= TARGET_RSS_MB}
    rows = [
        ["cache side alone (recorded pages)", f"{result['cache_side']['entities_per_cpu_s']:,.0f} /CPU-s",
         f">= {TARGET_CPU:,.0f}", result["met"]["entities_per_cpu_s"]],
        ["end to end / mock alone", f"{result['end_to_end']['entities_per_s']:,.0f} / "
         f"{alone['entities_per_s']:,.0f} /s = {result['end_to_end']['vs_mock_alone']}x", f">= {TARGET_RATIO}x",
         result["met"]["end_to_end_vs_mock"]],
        [f"latency {args.latency}s", f"{result['latency']['entities_per_s']:,.0f} /s", f">= {TARGET_LATENCY:,.0f}",
         result["met"]["latency_entities_per_s"]],
        [f"  (mock alone at {args.latency}s: {result['mock_alone_latency']['entities_per_s']:,.0f} /s)",
         f"{result['latency']['vs_mock_alone']}x", "", None],
        ["scan peak RSS", f"{peak} MB", f"<= {TARGET_RSS_MB:.0f}", result["met"]["peak_rss_mb"]],
    ]
    if args.before:
        b = result["before"]
        rows += [
            [f"before ({b['git']}): cache side", f"{b['cache_side']['entities_per_cpu_s']:,.0f} /CPU-s", "", None],
            [f"before ({b['git']}): end to end", f"{b['end_to_end']['entities_per_s']:,.0f} /s = "
             f"{b['end_to_end']['vs_mock_alone']}x", "", None],
            [f"before ({b['git']}): latency", f"{b['latency']['entities_per_s']:,.0f} /s = "
             f"{b['latency']['vs_mock_alone']}x", "", None],
            [f"before ({b['git']}): peak RSS", f"{max(b['end_to_end']['peak_rss_mb'], b['latency']['peak_rss_mb'])} MB",
             "", None]]
    if args.mock_before:
        mb = result["mock_before"]
        rows += [
            [f"mock of {mb['git']} alone", f"{mb['mock_alone']['entities_per_s']:,.0f} /s", "", None],
            [f"mock of {mb['git']} alone at {args.latency}s", f"{mb['mock_alone_latency']['entities_per_s']:,.0f} /s",
             "", None],
            [f"latency {args.latency}s against the mock of {mb['git']}", f"{mb['latency']['entities_per_s']:,.0f} /s = "
             f"{mb['latency']['vs_mock_alone']}x", "", None]]
    print()
    print(common.table([[a, b, c, "" if d is None else "met" if d else "MISSED"] for a, b, c, d in rows],
                       ["what", "figure", "target", ""]))
    print(f"load average: {result['loadavg']}")
    print(f"wrote {common.write_result(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
