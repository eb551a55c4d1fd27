"""Real processes for the sync tests: a mock site, `sgcache serve` / `sgcache events`, and a
comparison of every cached row (as the read engine serves it) with the site.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sgcache.config import Config, load_config
from sgcache.read.engine import ReadEngine
from sgcache.store.tables import Store, make_engine
from tests.support.procs import ROOT, MockProcess

#: The events-off script every test site gets (the `ingest_bot` role).
NOEVENTS = ("ingest", "ingestkey0123456789")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CacheEnv:
    """One cache database and data dir wired to one mock site."""

    mock: MockProcess
    db_url: str
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return load_config(env=self.env)

    @property
    def env(self) -> dict[str, str]:
        return {"SGCACHE_SHOTGUN_URL": self.mock.url, "SGCACHE_SCRIPT_NAME": self.mock.script_name,
                "SGCACHE_SCRIPT_KEY": self.mock.script_key, "SGCACHE_DB_URL": self.db_url,
                "SGCACHE_DATA_DIR": str(self.data_dir), **self.extra_env}

    def prime(self) -> None:
        """Create the cache from the site's schema and load it with a full scan."""
        from sgcache.runtime import CacheService
        from sgcache.sync.scan import full_scan

        async def run() -> None:
            svc = await CacheService.open(self.config)
            try:
                await full_scan(svc.upstream, svc.store)
            finally:
                await svc.aclose()
        asyncio.run(run())

    def start(self, verb: str, *args: str) -> subprocess.Popen[str]:
        """Start `sgcache serve` or `sgcache events` and wait until it is ready."""
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        log = open(self.data_dir / f"{verb}.log", "a")
        proc = subprocess.Popen([sys.executable, "-m", "sgcache.cli", verb, *args], cwd=ROOT, env=env,
                                text=True, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def serve(self) -> str:
        port = free_port()
        proc = self.start("serve", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(self.log("serve"))
            try:
                if httpx.post(url + "/api3/json", json={"method_name": "info", "params": []},
                              timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("serve did not start: " + self.log("serve"))

    def log(self, verb: str) -> str:
        p = self.data_dir / f"{verb}.log"
        return p.read_text()[-6000:] if p.exists() else ""

    def ctrl(self, cmd: str, timeout: float = 120) -> dict[str, Any]:
        """`sgcache ctrl CMD` over the unix socket; waits for a leader to bind it."""
        from sgcache.sync.control import send
        deadline = time.monotonic() + 60
        while True:
            try:
                out = send(self.config, cmd, timeout=timeout)
                assert out.get("ok"), out
                return out
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


def short_dir() -> Path:
    """A data dir short enough for a unix socket path (pytest's tmp paths may not be)."""
    return Path(tempfile.mkdtemp(prefix="sgs-", dir="/tmp"))


class CacheView:
    """Reads the cache database directly through the read engine (never passed through)."""

    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)
        schema = Store.recorded_schema(self.engine)
        assert schema is not None, "cache not created"
        self.store = Store(self.engine, schema)
        self.reader = ReadEngine(self.store)

    def close(self) -> None:
        self.engine.dispose()

    def fields(self, etype: str) -> list[str]:
        return sorted(self.store[etype].fields)

    def read(self, etype: str, filters: list[Any], fields: list[str] | None = None,
             retired: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            with self.engine.connect() as conn:
                res = self.reader.read(conn, {
                    "type": etype, "filters": {"logical_operator": "and", "conditions": [
                        {"path": f[0], "relation": f[1], "values": f[2] if isinstance(f[2], list) else [f[2]]}
                        for f in filters]},
                    "return_fields": fields or self.fields(etype),
                    "return_only": "retired" if retired else "active",
                    "sorts": [{"field_name": "id", "direction": "asc"}],
                    "paging": {"entities_per_page": 500, "current_page": page}})
            ents = res["entities"]
            out.extend(ents)
            if len(ents) < 500:
                return out
            page += 1

    def one(self, etype: str, eid: int, fields: list[str] | None = None) -> dict[str, Any] | None:
        """The entity as the cache serves it, with `__retired` set when it is retired."""
        for retired in (False, True):
            got = self.read(etype, [["id", "is", eid]], fields, retired)
            if got:
                return {**got[0], "__retired": retired}
        return None


def site_one(sg: Any, etype: str, eid: int, fields: list[str]) -> dict[str, Any] | None:
    for retired in (False, True):
        got = sg.find(etype, [["id", "is", eid]], fields, retired_only=retired)
        if got:
            return {**got[0], "__retired": retired}
    return None


def normalize(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _site_all(site_url: str, auth: dict[str, str], etype: str, fields: list[str],
              return_only: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    last = 0
    with httpx.Client(timeout=120) as c:
        while True:
            r = c.post(site_url + "/api3/json", json={"method_name": "read", "params": [auth, {
                "type": etype, "return_fields": fields, "return_only": return_only,
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "greater_than", "values": [last]}]},
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": 500, "current_page": 1}}]}).json()
            ents = r["results"]["entities"]
            out.extend(ents)
            if len(ents) < 500:
                return out
            last = ents[-1]["id"]


def compare_all(mock: MockProcess, view: CacheView, types: list[str] | None = None,
                limit: int = 20) -> list[str]:
    """Every cached entity, active and retired, as served by the cache vs. the site."""
    auth = {"script_name": mock.script_name, "script_key": mock.script_key}
    diffs: list[str] = []
    for etype in types or list(view.store.entities):
        fields = view.fields(etype)
        for retired in (False, True):
            site = {e["id"]: e for e in _site_all(mock.url, auth, etype, fields,
                                                    "retired" if retired else "active")}
            ours = {e["id"]: e for e in view.read(etype, [], fields, retired)}
            for i in sorted(set(site) | set(ours)):
                a, b = normalize(site.get(i)), normalize(ours.get(i))
                if a != b:
                    if a is None or b is None:
                        diffs.append(f"{etype} {i} retired={retired}: site={a is not None} cache={b is not None}")
                    else:
                        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                        diffs.append(f"{etype} {i} retired={retired}: " + "; ".join(
                            f"{k}: site={a.get(k)!r} cache={b.get(k)!r}" for k in keys))
    return diffs[:limit] if limit else diffs
