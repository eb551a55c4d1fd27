"""Real processes for the robustness tests: one mock site, one primed cache database,
and as many `sgcache serve` processes on it as the tests need (each with its own settings).

`serve()` runs the real CLI; with `debug=True` it first raises the log level to DEBUG
(the CLI has no flag for it yet) so the secret scan sees the most talkative logs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from ..e2e.harness import Cache, Site, cache_env, free_port, wait_http

#: Runs `sgcache <args>` with every log line at DEBUG.
_DEBUG_LAUNCH = (
    "import logging, sys\n"
    "import sgcache.logs as logs\n"
    "_configure = logs.configure\n"
    "logs.configure = lambda json_logs=False, level=logging.INFO: _configure(json_logs, logging.DEBUG)\n"
    "from sgcache.cli import main\n"
    "main(sys.argv[1:], prog_name='sgcache')\n"
)


@dataclass
class Primed:
    """A cache database loaded by `sgcache scan --full` from `site`."""

    site: Site
    db_url: str
    data_dir: Path


def serve(primed: Primed, *args: str, debug: bool = False, json_logs: bool = False,
          **settings: Any) -> Cache:
    """Start `sgcache serve` on the primed database; settings become SGCACHE_* variables."""
    env = cache_env(primed.site, primed.db_url, primed.data_dir,
                    **{"SGCACHE_" + k.upper(): str(v) for k, v in settings.items()})
    port = free_port()
    log = primed.data_dir / f"serve-{port}.log"
    cmd = [sys.executable, "-c", _DEBUG_LAUNCH] if debug else [sys.executable, "-m", "sgcache.cli"]
    cmd += ["serve", "--port", str(port), *args]
    if json_logs:
        cmd.append("--json-logs")
    proc = subprocess.Popen(cmd, env=env, text=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc=proc)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(log.read_text()[-4000:])
    return Cache(url, env, proc, log)


def rpc(url: str, method: str, *params: Any, client: httpx.Client | None = None) -> httpx.Response:
    """POST one api3 call exactly as given."""
    body = {"method_name": method, "params": list(params)}
    return (client or httpx).post(url + "/api3/json", json=body, timeout=60)  # type: ignore[union-attr]


def post_raw(url: str, body: bytes, client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(url + "/api3/json", content=body,  # type: ignore[union-attr]
                                  headers={"content-type": "application/json"}, timeout=60)


def checksum(db_url: str) -> dict[str, str]:
    """A digest of every cached table's rows (bookkeeping `_sgcache_*` tables left out)."""
    engine = sa.create_engine(db_url)
    out: dict[str, str] = {}
    try:
        md = sa.MetaData()
        md.reflect(engine)
        with engine.connect() as conn:
            for name, table in sorted(md.tables.items()):
                if name.startswith("_sgcache"):
                    continue
                order = list(table.primary_key.columns) or list(table.columns)
                h = hashlib.sha256()
                for row in conn.execute(sa.select(table).order_by(*order)):
                    h.update(repr(tuple(row)).encode())
                out[name] = h.hexdigest()
    finally:
        engine.dispose()
    return out
