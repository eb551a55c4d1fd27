"""Real processes on loopback: the mock site, `sgcache scan`, `sgcache serve`.

The differential harness runs the same call through the real `shotgun_api3` client
against the site and against the cache, and requires identical results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import shotgun_api3

from sgcache.launch import free_port, wait_http

__all__ = ["free_port", "wait_http"]


@dataclass
class Site:
    url: str
    admin_url: str
    script_name: str
    script_key: str
    proc: subprocess.Popen[str]

    def sg(self, url: str | None = None, **kw: Any) -> shotgun_api3.Shotgun:
        kw.setdefault("script_name", self.script_name)
        kw.setdefault("api_key", self.script_key)
        return shotgun_api3.Shotgun(url or self.url, **kw)

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.admin_url + "/stats", timeout=5).json()

    def reset_stats(self) -> None:
        httpx.post(self.admin_url + "/stats/reset", timeout=5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_site(*args: str, demo: int = 400) -> Site:
    """Start `sgcache mock --demo N` on free loopback ports."""
    from sgcache.cli.demo import start_mock
    proc, info = start_mock(free_port(), demo, extra=["--admin-port", str(free_port()), *args])
    return Site(info["url"], info["admin"], info["script_name"], info["script_key"], proc)


@dataclass
class Cache:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    log: Path | None = None
    extra: list[str] = field(default_factory=list)

    def sg(self, site: Site, **kw: Any) -> shotgun_api3.Shotgun:
        return site.sg(self.url, **kw)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def cache_env(site: Site, db_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SGCACHE_SHOTGUN_URL": site.url, "SGCACHE_SCRIPT_NAME": site.script_name,
        "SGCACHE_SCRIPT_KEY": site.script_key, "SGCACHE_DB_URL": db_url,
        "SGCACHE_DATA_DIR": str(data_dir), **extra})
    return env


def sgcache(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sgcache.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def start_cache(site: Site, db_url: str, data_dir: Path, *serve_args: str, scan: bool = True,
                **extra_env: str) -> Cache:
    env = cache_env(site, db_url, data_dir, **extra_env)
    if scan:
        res = sgcache(env, "scan", "--full")
        assert res.returncode == 0, res.stderr[-4000:]
    port = free_port()
    log = data_dir / f"serve-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "sgcache.cli", "serve", "--port", str(port), *serve_args],
                            env=env, text=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc=proc)
    except RuntimeError:
        raise RuntimeError(log.read_text()[-4000:])
    return Cache(url, env, proc, log)


def normalize(value: Any) -> Any:
    """Results compared as JSON (datetimes as the client returns them)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))
