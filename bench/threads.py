"""Note threads and text search: sgcache's local answers vs the mock site, in one run.

Issue 13, item 4. Through the real `shotgun_api3` client, on a demo site (`--size`
entities, 20,000 by default), side by side in alternating order:

  thread   `note_thread_read(N)` for the demo Notes sgcache answers itself (no reply by a
           person: their `user` carries an image URL, which goes to the site);
  search   `text_search(word, {"Note": [], "Reply": []})` for words of the Notes' subjects
           (types without an image field: answered locally).

Each call through sgcache is checked to equal the mock's answer, and the mock's request
counter must not move during sgcache's calls (every measured call was local). The mock
answers from memory on the same host with no network, so it is a floor that a real site
(tens to hundreds of ms away) never reaches: the ratio says what the local path costs
compared with an in-memory site, not what a studio gains.

    .venv/bin/python bench/threads.py [--size 20000] [--n 300] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def site_calls(mock: common.Mock, method: str) -> int:
    return int(httpx.get(mock.admin_url + "/stats", timeout=10).json().get("requests", {}).get(method, 0))


def measure(calls: list[Any], site: Any, cache: Any, mock: common.Mock, method: str) -> dict[str, Any]:
    """Each call against both targets, alternating which goes first; latencies per target."""
    lat: dict[str, list[float]] = {"mock": [], "sgcache": []}
    for i, call in enumerate(calls):
        order = [("mock", site), ("sgcache", cache)] if i % 2 else [("sgcache", cache), ("mock", site)]
        answers = {}
        for name, sg in order:
            before = site_calls(mock, method) if name == "sgcache" else 0
            t, answers[name] = common.timed(lambda sg=sg, call=call: call(sg))
            if name == "sgcache" and site_calls(mock, method) != before:
                raise RuntimeError(f"{method}: sgcache asked the site for call {i}")
            lat[name].append(t)
        if answers["mock"] != answers["sgcache"]:
            raise RuntimeError(f"{method}: sgcache's answer differs from the mock's for call {i}")
    out = {k: common.summarize(v) for k, v in lat.items()}
    out["p50_ratio_sgcache_over_mock"] = round(out["sgcache"]["p50_ms"] / out["mock"]["p50_ms"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=300, help="calls per target and kind")
    ap.add_argument("--db-url", default=None)
    args = ap.parse_args()
    work = common.WORK / "threads"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict[str, Any] = {"machine": common.machine(), "size": args.size, "load": {"start": common.loadavg()},
                              "backend": "postgresql" if args.db_url else "sqlite"}
    mock = common.start_mock(common.WORK / f"threads-{args.size}.pkl", args.size)
    cache_proc = None
    try:
        env = common.cache_env(mock, args.db_url, work, None)
        result["scan"] = common.full_scan(env)
        url, cache_proc = common.start_cache_server(env, work / "serve.log", "--no-sync")
        site, cache = mock.sg(), mock.sg(url)
        notes = site.find("Note", [], ["subject"])
        local = []
        for n in notes:  # the threads sgcache answers itself
            before = site_calls(mock, "note_thread_contents")
            cache.note_thread_read(n["id"])
            if site_calls(mock, "note_thread_contents") == before:
                local.append(n)
        result["notes"], result["local_threads"] = len(notes), len(local)
        words = sorted({w for n in local for w in (n["subject"] or "").split() if len(w) >= 4})
        k = args.n
        threads = [lambda sg, i=n["id"]: sg.note_thread_read(i) for n in (local * (k // max(len(local), 1) + 1))[:k]]
        searches = [lambda sg, w=w: sg.text_search(w, {"Note": [], "Reply": []})
                    for w in (words * (k // max(len(words), 1) + 1))[:k]]
        # fresh clients per phase: an idle keep-alive connection is closed by the server
        result["load"]["before_thread"] = common.loadavg()
        result["thread"] = measure(threads, mock.sg(), mock.sg(url), mock, "note_thread_contents")
        result["load"]["before_search"] = common.loadavg()
        result["search"] = measure(searches, mock.sg(), mock.sg(url), mock, "query_display_name_cache")
        result["load"]["end"] = common.loadavg()
    finally:
        common.stop(cache_proc)
        mock.discard()
    path = common.write_result("threads" + ("-postgresql" if args.db_url else "-sqlite"), result)
    rows = [[kind, result[kind]["mock"]["p50_ms"], result[kind]["sgcache"]["p50_ms"],
             result[kind]["sgcache"]["p99_ms"], result[kind]["p50_ratio_sgcache_over_mock"]]
            for kind in ("thread", "search")]
    print(common.table(rows, ["kind", "mock p50 ms", "sgcache p50 ms", "sgcache p99 ms", "ratio"]))
    print(f"load {result['load']}; {result['local_threads']}/{result['notes']} threads local; wrote {path}")


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"{time.monotonic() - t0:.0f} s")
