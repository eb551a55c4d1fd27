"""Reads as a restricted user against reads as a full user, side by side in one run (issue 12).

Through the real `shotgun_api3` client, against one `sgcache serve` with the default
permission policy (the site's default roles), two users read the same queries, the site's
script acting as each (`sudo_as_login`):

  full      the site's Admin (`full`: answered as before permissions existed);
  artist    an Artist (`assigned_projects`: only the Projects whose users hold them, and
            those projects' rows; links in the answer checked to be visible too);

for two queries:

  by_id     `find("Shot", [["id", "is", N]], fields)` for random shots the artist may see;
  filtered  `find("Shot", [["sg_status_list", "in", [4 statuses]], ["sg_cut_duration",
            "between", [lo, hi]]], fields, order=[code asc, id asc], limit=200)`, a
            different query every request.

The fields hold single links (sg_sequence, project), so the artist's answers pay for the
link check too. Batches of `--batch` requests alternate between the users (rotating which
goes first); the whole timed pass is repeated `--rounds` times, each round giving a ratio of
p50s, and the median of the rounds' ratios is the figure (a loaded machine moves single
rounds). Every answer must come from the cache (its passthrough counter must not move)
and, for a sample, equal the site's answer for the same user.

Target (issue 12): the artist's p50 within 1.2x the full user's, for both queries.

    .venv/bin/python bench/permissions.py                       # SQLite
    .venv/bin/python bench/permissions.py --db-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

FIELDS = ["code", "sg_status_list", "sg_sequence", "project", "description", "sg_cut_in", "sg_cut_out",
          "sg_cut_duration", "updated_at"]
ORDER = [{"field_name": "code", "direction": "asc"}, {"field_name": "id", "direction": "asc"}]
STATUSES = ["wtg", "rdy", "ip", "cbb", "hld", "omt", "fin"]
RULES = ["Project.*", "Sequence.*", "Shot.*", "HumanUser.*", "ApiUser.*", "Group.*", "PermissionRuleSet.*"]


def by_id(sg: Any, q: int) -> Any:
    return sg.find("Shot", [["id", "is", q]], FIELDS)


def filtered(sg: Any, q: dict[str, Any]) -> Any:
    return sg.find("Shot", [["sg_status_list", "in", q["statuses"]],
                            ["sg_cut_duration", "between", [q["lo"], q["hi"]]]], FIELDS, order=ORDER, limit=200)


CALLS = {"by_id": by_id, "filtered": filtered}


def client(url: str, mock: common.Mock, login: str) -> Any:
    import shotgun_api3
    return shotgun_api3.Shotgun(url, script_name=mock.script_name, api_key=mock.script_key, sudo_as_login=login)


def passed_through(cache_url: str) -> float:
    """sgcache_requests_total{method="read", outcome="passthrough"} of the cache."""
    import httpx
    n = 0.0
    for line in httpx.get(cache_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("sgcache_requests_total{") and 'method="read"' in line and 'outcome="passthrough"' in line:
            n += float(line.rsplit(" ", 1)[1])
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=200_000, help="demo site size (entities)")
    ap.add_argument("--state", default=None, help="mock state file (default: per size, generated once)")
    ap.add_argument("--db-url", default=None, help="SQLAlchemy URL of the cache (default SQLite)")
    ap.add_argument("--n", type=int, default=600, help="requests per user and query")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="timed passes; the figure is the median of their ratios")
    ap.add_argument("--check", type=int, default=40, help="answers per user and query compared with the site")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    work = common.WORK / "permissions"
    work.mkdir(parents=True, exist_ok=True)
    db_kind = "sqlite" if not args.db_url else "postgresql"
    state = Path(args.state or common.WORK / f"site-perm-{args.size}.pickle")
    result: dict[str, Any] = {"benchmark": "permissions", "db": db_kind, "machine": common.machine(),
                              "command": " ".join([".venv/bin/python", "bench/permissions.py", *sys.argv[1:]]),
                              "settings": {k: v for k, v in vars(args).items() if k != "db_url"},
                              "loadavg": {"start": common.loadavg()}}
    mock = cproc = None
    try:
        mock = common.start_mock(state, args.size, log=work / "mock.log")
        data_dir = work / f"cache-{db_kind}"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        rules = data_dir / "rules.txt"
        rules.write_text("\n".join(RULES) + "\n", encoding="utf-8")
        env = common.cache_env(mock, args.db_url, data_dir, rules)
        env["SGCACHE_PERMISSIONS"] = ""  # the default policy: the site's default roles
        env["SGCACHE_SHADOW_RATE"] = "0"  # no shadow reads: every read the site sees is a passthrough
        result["scan"] = common.full_scan(env)
        cache_url, cproc = common.start_cache_server(env, work / f"serve-{db_kind}.log", "--no-sync")

        admin = mock.sg()
        artist = max(admin.find("HumanUser", [["permission_rule_set.PermissionRuleSet.code", "is", "Artist"],
                                              ["sg_status_list", "is", "act"]], ["login", "projects"]),
                     key=lambda u: (len(u["projects"]), -u["id"]))
        users = {"full": "admin", "artist": artist["login"]}
        clients = {k: client(cache_url, mock, v) for k, v in users.items()}
        sites = {k: client(mock.url, mock, v) for k, v in users.items()}
        rng = random.Random(args.seed)
        visible = [s["id"] for s in sites["artist"].find("Shot", [], [])]
        result["artist"] = {"projects": len(artist["projects"]), "shots_visible": len(visible),
                            "shots": len(admin.find("Shot", [], []))}
        queries: dict[str, list[Any]] = {
            "by_id": rng.sample(visible, min(args.n, len(visible))),
            "filtered": [{"statuses": sorted(rng.sample(STATUSES, 4)), "lo": (lo := rng.randint(24, 90)),
                          "hi": lo + 150} for _ in range(args.n)]}
        for sg in clients.values():  # verify each caller, build plans
            by_id(sg, visible[0])
            filtered(sg, queries["filtered"][0])

        # the answers are the site's, for each user
        for kind, qs in queries.items():
            for who in users:
                for q in qs[:args.check]:
                    assert CALLS[kind](clients[who], q) == CALLS[kind](sites[who], q), (kind, who, q)

        before = passed_through(cache_url)
        rounds: list[dict[str, dict[str, list[float]]]] = []
        result["loadavg"]["rounds"] = []
        for _ in range(args.rounds):
            lat: dict[str, dict[str, list[float]]] = {k: {u: [] for u in users} for k in queries}
            for kind, qs in queries.items():
                call = CALLS[kind]
                names = list(users)
                for b, start in enumerate(range(0, len(qs), args.batch)):
                    for who in names[b % 2:] + names[:b % 2]:
                        sg = clients[who]
                        for q in qs[start:start + args.batch]:
                            t0 = time.perf_counter()
                            call(sg, q)
                            lat[kind][who].append(time.perf_counter() - t0)
            rounds.append(lat)
            result["loadavg"]["rounds"].append(common.loadavg())
        n_passed = passed_through(cache_url) - before
        result["passed_through"] = n_passed
        result["loadavg"]["end"] = common.loadavg()
        rows = []
        result["results"] = {}
        for kind in queries:
            per_round = []
            for lat in rounds:
                s = {who: common.summarize(sorted(v)) for who, v in lat[kind].items()}
                per_round.append({**s, "ratio_p50": round(s["artist"]["p50_ms"] / s["full"]["p50_ms"], 3)})
            mid = sorted(per_round, key=lambda r: r["ratio_p50"])[len(per_round) // 2]
            ratio = mid["ratio_p50"]
            result["results"][kind] = {"full": mid["full"], "artist": mid["artist"], "ratio_p50": ratio,
                                       "ratio_p50_rounds": [r["ratio_p50"] for r in per_round],
                                       "p50_ms_rounds": [[r["full"]["p50_ms"], r["artist"]["p50_ms"]] for r in per_round]}
            rows.append([kind, mid["full"]["p50_ms"], mid["artist"]["p50_ms"], f"{ratio:.2f}x",
                         " ".join(f"{r['ratio_p50']:.2f}" for r in per_round), "ok" if ratio <= 1.2 else "MISSED"])
        print(common.table(rows, ["query", "full p50 ms", "artist p50 ms", "artist / full (median round)",
                                  "rounds", "<= 1.2x"]))
        print(f"passed through during the timed phase: {n_passed:.0f} (must be 0)")
        path = common.write_result(args.out or f"permissions-{db_kind}", result)
        print(f"wrote {path}")
        return 0 if n_passed == 0 else 1
    finally:
        common.stop(cproc)
        if mock is not None:
            mock.discard() if state.exists() else mock.stop()


if __name__ == "__main__":
    raise SystemExit(main())
