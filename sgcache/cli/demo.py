"""`sgcache demo`: mock site with demo data -> primed SQLite cache -> served, on loopback."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..config import load_config
from ..launch import read_mock_banner, wait_http
from .common import setup_logging


def start_mock(port: int, size: int, *, extra: list[str] | None = None,
               timeout: float = 120.0) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start `sgcache mock` and return the process and its start-up banner's key=value pairs."""
    cmd = [sys.executable, "-m", "sgcache.cli", "mock", "--host", "127.0.0.1", "--port", str(port),
           "--demo", str(size), *(extra or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    return proc, read_mock_banner(proc, timeout)


#: Written into a data dir the demo uses: "created" (the demo made the dir: a later run
#: deletes it whole) or "adopted" (it was empty: a later run deletes only the demo's files).
MARKER = ".sgcache-demo"


def _demo_files(data: Path) -> list[Path]:
    """What a demo run writes into its data dir: the SQLite cache, the leader lock, the socket."""
    from ..sync.control import SOCKET_NAME
    names = {"cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm", "sync.leader", SOCKET_NAME, MARKER}
    return [p for p in data.iterdir() if p.name in names]


def prepare_data_dir(data: Path) -> None:
    """A fresh data dir for the demo, never deleting anything sgcache did not create.

    A dir the demo created is wiped; in a dir it adopted (it was empty) only its own
    files are removed; an empty dir is adopted; any other existing path is refused.
    """
    marker = data / MARKER
    kind = marker.read_text().split()[0] if marker.is_file() and marker.read_text().strip() else None
    if kind == "created":
        shutil.rmtree(data)
    elif kind == "adopted":
        for p in _demo_files(data):
            p.unlink()
    elif data.exists() and (not data.is_dir() or any(data.iterdir())):
        raise click.ClickException(
            f"--data-dir {data} already exists and was not created by `sgcache demo` (no {MARKER} "
            "file in it): refusing to delete it. Choose another --data-dir, or empty it yourself (a "
            "demo dir made by an earlier sgcache has no marker either).")
    else:
        kind = "adopted" if data.exists() else "created"
    data.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{kind} by `sgcache demo`: the next demo run deletes "
                      f"{'this directory' if kind == 'created' else 'the files it wrote here'}\n")


def run_demo(*, size: int, port: int, mock_port: int, data_dir: str, once: bool) -> int:
    from ..serve.server import serve_async
    from .scan import run_scan

    data = Path(data_dir)
    prepare_data_dir(data)
    click.echo(f"starting the mock site on 127.0.0.1:{mock_port} with ~{size} demo entities ...")
    proc, info = start_mock(mock_port, size)
    try:
        site_url = info.get("url", f"http://127.0.0.1:{mock_port}")
        config = load_config(env={}, overrides={
            "shotgun_url": site_url, "script_name": info["script_name"], "script_key": info["script_key"],
            "data_dir": str(data), "port": port, "host": "127.0.0.1"})
        click.echo(f"priming the SQLite cache in {data}/cache.sqlite ...")
        res = asyncio.run(run_scan(config, True, None, None))
        click.echo(f"primed {sum(res.rows.values())} entities of {len(res.rows)} types in {res.seconds:.1f}s")
        cache_url = f"http://127.0.0.1:{port}"
        click.echo("")
        click.echo(f"sgcache is serving {site_url} at {cache_url}. Connect with:")
        click.echo("")
        click.echo("    import shotgun_api3")
        click.echo(f"    sg = shotgun_api3.Shotgun({cache_url!r}, script_name={info['script_name']!r},")
        click.echo(f"                              api_key={info['script_key']!r})")
        click.echo("    sg.find('Shot', [['code', 'contains', '0']], ['code', 'sg_sequence'], limit=5)")
        click.echo("")
        if once:
            return _check_once(config, cache_url, info)
        click.echo("Press Ctrl-C to stop.")
        try:
            asyncio.run(serve_async(config))
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def served_reads(cache_url: str) -> tuple[float, float]:
    """(reads answered locally, reads passed through) so far, from the cache's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    served = passed = 0.0
    for fam in text_string_to_metric_families(httpx.get(cache_url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "sgcache_requests_total" and s.labels.get("method") == "read":
                if s.labels.get("outcome") == "served":
                    served += s.value
                elif s.labels.get("outcome") == "passthrough":
                    passed += s.value
    return served, passed


def _check_once(config: Any, cache_url: str, info: dict[str, str]) -> int:
    """Serve briefly, run one find through the real client, and require that the cache
    answered it itself (its /metrics counters), not the site behind it."""
    import threading

    import shotgun_api3

    from ..serve.server import serve_async

    def serve() -> None:
        try:
            asyncio.run(serve_async(config))
        except Exception:  # pragma: no cover - reported by the check below
            logging.getLogger("sgcache.demo").exception("serving the demo failed")

    threading.Thread(target=serve, daemon=True).start()
    wait_http(cache_url, 30)
    sg = shotgun_api3.Shotgun(cache_url, script_name=info["script_name"], api_key=info["script_key"])
    served0, passed0 = served_reads(cache_url)
    shots = sg.find("Shot", [], ["code", "sg_sequence"], limit=5)
    # The server counts a request once its answer has gone out: wait for the count to move.
    deadline = time.monotonic() + 10
    while True:
        served1, passed1 = served_reads(cache_url)
        if served1 + passed1 > served0 + passed0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    local = served1 - served0 >= 1 and passed1 == passed0
    click.echo(f"demo check: read {len(shots)} shots through the cache, e.g. {shots[:1]}")
    click.echo(f"demo check: {served1 - served0:.0f} read(s) answered locally, "
               f"{passed1 - passed0:.0f} passed through to the site")
    if not local:
        click.echo("demo check FAILED: the read was not answered from the cache", err=True)
    return 0 if shots and local else 1


@click.command()
@click.option("--size", default=2000, show_default=True, help="Entities on the demo site.")
@click.option("--port", default=8010, show_default=True, type=int, help="Port of the cache.")
@click.option("--mock-port", default=8020, show_default=True, type=int, help="Port of the mock site.")
@click.option("--data-dir", default=".sgcache/demo", show_default=True)
@click.option("--once", is_flag=True, help="Prime, check one read through the cache, and exit.")
def demo(size: int, port: int, mock_port: int, data_dir: str, once: bool) -> None:
    """Start the mock site with demo data, prime a SQLite cache, and serve it."""
    setup_logging()
    sys.exit(run_demo(size=size, port=port, mock_port=mock_port, data_dir=data_dir, once=once))

