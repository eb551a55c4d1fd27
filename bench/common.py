"""Shared helpers for the benchmarks: real processes on loopback, the HTTP floor, stats.

Every benchmark drives the real `shotgun_api3` client against real processes started
the way an operator would start them (`sgcache mock`, `sgcache scan --full`,
`sgcache serve`), so what is measured is what a pipeline tool sees.

The big mock site is generated once and kept as a `--state` pickle under /tmp (never in
the repository); later runs reload it in a few seconds.

Run as a script, this module is the HTTP floor server (see `floor_app`):

    python bench/common.py floor --port 8030 --responses FILE.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sgcache.launch import free_port, read_mock_banner, wait_http

REPO = Path(__file__).resolve().parent.parent
#: Results go to the checkout the benchmark was started from, unless told otherwise (a
#: clean `git worktree` of a commit is the way to measure while others edit the tree).
RESULTS = Path(os.environ.get("SGCACHE_BENCH_RESULTS", REPO / "bench" / "results"))
WORK = Path(os.environ.get("SGCACHE_BENCH_DIR", Path(tempfile.gettempdir()) / "sgcache-bench"))
PY = sys.executable

#: ~10.45 entities per shot subtree (sgcache/mock/demo.py `_PER_SHOT`): ~100,000 shots.
DEFAULT_SIZE = 1_045_000


# -- processes -------------------------------------------------------------------------

def stop(proc: subprocess.Popen[Any] | None, timeout: float = 60.0) -> None:
    """Terminate one process we started (SIGTERM, then SIGKILL)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Mock:
    url: str
    admin_url: str
    script_name: str
    script_key: str
    proc: subprocess.Popen[str]
    startup_s: float = 0.0
    generated: bool = False

    def sg(self, url: str | None = None) -> Any:
        return make_client(url or self.url, self.script_name, self.script_key)

    def stop(self) -> None:
        # the mock saves its state on SIGTERM; that takes a while for a big site
        stop(self.proc, timeout=180)

    def discard(self) -> None:
        """Stop without re-saving: the benchmarks only read, the state file is current."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def start_mock(state: Path, size: int = DEFAULT_SIZE, seed: int = 1, timeout: float = 1800.0,
               log: Path | None = None, extra: tuple[str, ...] = (), tree: Path = REPO) -> Mock:
    """`sgcache mock --state FILE` on free loopback ports; generate and save FILE if missing.
    `tree`: the checkout whose mock runs (another commit's, to compare mocks side by side).

    Loading the pickle of a 1M-entity site takes ~20 s; generating it ~2 min.
    """
    state.parent.mkdir(parents=True, exist_ok=True)
    generated = not state.exists()
    cmd = [PY, "-m", "sgcache.cli", "mock", "--host", "127.0.0.1", "--port", str(free_port()),
           "--admin-port", str(free_port()), "--demo", str(size), "--seed", str(seed),
           "--state", str(state), *extra]
    t0 = time.monotonic()
    err = open(log, "a") if log else subprocess.DEVNULL
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree != REPO else None
    proc = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1, env=env)
    info = read_mock_banner(proc, timeout)
    mock = Mock(info["url"], info["admin"], info["script_name"], info["script_key"], proc,
                time.monotonic() - t0, generated)
    if generated:
        import httpx
        httpx.post(mock.admin_url + "/save", timeout=600)
    return mock


def fresh_db(url: str, data: Path, name: str) -> tuple[str, Callable[[], None]]:
    """An empty database and what drops it: a new SQLite file under `data` (`url` empty
    or SQLite), or a new database on the PostgreSQL server of `url`."""
    if not url.startswith("postgresql"):
        path = data / f"{name}-{uuid.uuid4().hex[:8]}.sqlite"

        def unlink() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}", unlink
    import sqlalchemy as sa
    db = f"sgbench_{name}_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{db}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + db, drop


def cache_env(mock: Mock, db_url: str | None, data_dir: Path, rules: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SGCACHE_SHOTGUN_URL": mock.url, "SGCACHE_SCRIPT_NAME": mock.script_name,
                "SGCACHE_SCRIPT_KEY": mock.script_key, "SGCACHE_DATA_DIR": str(data_dir)})
    if db_url:
        env["SGCACHE_DB_URL"] = db_url
    else:
        env.pop("SGCACHE_DB_URL", None)
    if rules:
        env["SGCACHE_RULES"] = str(rules)
    else:
        env.pop("SGCACHE_RULES", None)
    # The benchmarks read as the site's script (API Admin: everything), also from sites saved
    # before permission groups existed; bench/permissions.py measures the policies themselves.
    env.setdefault("SGCACHE_PERMISSIONS", '{"*": "full"}')
    # No background thumbnail copying: its first pass over a big site's images would be
    # measured along with whatever the benchmark measures (bench/browse.py sets it too).
    env.setdefault("SGCACHE_THUMBNAIL_CACHE_MB", "0")
    return env


def sgcache(env: dict[str, str], *args: str, timeout: float = 7200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "sgcache.cli", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def full_scan(env: dict[str, str]) -> dict[str, Any]:
    """Run `sgcache scan --full`; return rows, seconds and entities/s."""
    t0 = time.monotonic()
    res = sgcache(env, "scan", "--full")
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError("sgcache scan --full failed:\n" + res.stderr[-4000:])
    m = re.search(r"full scan: (\d+) rows in ([\d.]+)s", res.stdout + res.stderr)
    rows, secs = (int(m.group(1)), float(m.group(2))) if m else (0, wall)
    return {"rows": rows, "scan_seconds": secs, "wall_seconds": round(wall, 2),
            "entities_per_s": round(rows / secs, 1) if secs else None}


def start_cache_server(env: dict[str, str], log: Path, *args: str) -> tuple[str, subprocess.Popen[str]]:
    """`sgcache serve --no-sync` on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "sgcache.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             *args], cwd=REPO, env=env, text=True, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc=proc)
    except RuntimeError:
        stop(proc)
        raise RuntimeError(log.read_text()[-4000:])
    return url, proc


# -- the HTTP floor ----------------------------------------------------------------------

def floor_app(responses: dict[str, str]) -> Any:
    """A minimal Starlette app: `POST /api3/json` answered with canned bodies.

    `responses` maps a request kind to the exact body bytes (as text) to send back:
    "info" for `info`, and for `read` "read:<n>" where n is the number of filter
    conditions (so one floor serves both the by-id and the filtered find), falling
    back to "read". It parses the request JSON (any api3 server must) and nothing else.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    bodies = {k: v.encode("utf-8") for k, v in responses.items()}
    media = "application/json; charset=utf-8"

    async def api3(request: Request) -> Response:
        payload = json.loads(await request.body())
        method = payload.get("method_name")
        if method == "read":
            params = payload.get("params") or [None, {}]
            n = len(((params[-1] or {}).get("filters") or {}).get("conditions") or [])
            body = bodies.get(f"read:{n}") or bodies["read"]
        else:
            body = bodies.get(method) or bodies["info"]
        return Response(body, media_type=media)

    return Starlette(routes=[Route("/api3/json", api3, methods=["POST"])])


def serve_floor(port: int, responses_file: str) -> None:
    """Serve the floor the way `sgcache serve` serves the cache (uvicorn, same settings)."""
    import asyncio

    import uvicorn
    responses = json.loads(Path(responses_file).read_text(encoding="utf-8"))
    server = uvicorn.Server(uvicorn.Config(floor_app(responses), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False, timeout_keep_alive=75))
    asyncio.run(server.serve())


def start_floor(responses: dict[str, str], work: Path) -> tuple[str, subprocess.Popen[str]]:
    path = work / "floor-responses.json"
    path.write_text(json.dumps(responses), encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen([PY, str(Path(__file__).resolve()), "floor", "--port", str(port),
                             "--responses", str(path)], cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=open(work / "floor.log", "w"))
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc=proc)
    return url, proc


# -- the client ----------------------------------------------------------------------------

def make_client(url: str, script_name: str, script_key: str) -> Any:
    """The real client, with the same settings for every target."""
    import shotgun_api3
    return shotgun_api3.Shotgun(url, script_name=script_name, api_key=script_key)


class Recorder:
    """Capture the raw response bodies a client receives (to build the floor's answers)."""

    def __init__(self, sg: Any) -> None:
        self.bodies: list[str] = []
        self.raw: list[tuple[Any, Any]] = []  # (response headers, body) as the client got them
        orig = sg._http_request

        def rec(verb: str, path: str, body: Any, headers: Any) -> Any:
            out = orig(verb, path, body, headers)
            self.raw.append((out[1], out[2]))
            self.bodies.append(out[2].decode("utf-8") if isinstance(out[2], bytes) else out[2])
            return out
        sg._http_request = rec


# -- numbers -------------------------------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(latencies: list[float]) -> dict[str, Any]:
    """Latency summary in milliseconds, and closed-loop (one client) throughput."""
    s = sorted(latencies)
    total = sum(s)
    return {"n": len(s),
            "p50_ms": round(percentile(s, 50) * 1000, 3), "p90_ms": round(percentile(s, 90) * 1000, 3),
            "p99_ms": round(percentile(s, 99) * 1000, 3), "mean_ms": round(total / len(s) * 1000, 3),
            "max_ms": round(s[-1] * 1000, 3), "req_per_s_1client": round(len(s) / total, 1)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (from /proc), None if unavailable."""
    try:
        fields = open(f"/proc/{pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("shotgun_api3", "uvicorn", "starlette", "sqlalchemy", "httpx"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - informational only
            versions[mod] = None
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "sgcache"], cwd=REPO, capture_output=True,
                           text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": mem_gb, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "git": git.stdout.strip(),
            "sgcache_tree_dirty": bool(dirty.stdout.strip()),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.+-]+/)*[\w.+-]+")


def scrub_paths(text: str) -> str:
    """Results are committed: one machine's paths (checkout, venv, temp dirs) become `<path>/name`."""
    return _ABS_PATH.sub(lambda m: "<path>/" + m.group(0).rsplit("/", 1)[-1], text)


def write_result(name: str, data: dict[str, Any]) -> Path:
    """bench/results/<name>.json (pretty, stable key order)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    path.write_text(scrub_paths(text), encoding="utf-8")
    return path


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub-flavoured Markdown table."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(fmt(r) for r in cells[1:])])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("floor", help="serve the HTTP floor")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--responses", required=True, help="JSON object: request kind -> response body")
    args = ap.parse_args(argv)
    if args.cmd == "floor":
        serve_floor(args.port, args.responses)


if __name__ == "__main__":
    main()
