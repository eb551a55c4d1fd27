"""Run the mock site as a real process for tests (and for running the cache against it).

Usage::

    from tests.support.procs import start_mock, running_mock

    mock = start_mock("--demo", "300")          # extra `sgcache mock` arguments
    sg = mock.sg()                              # shotgun_api3.Shotgun with the site's script
    mock.set_faults(error_rate=0.5, seed=1)     # POST /faults on the admin port
    mock.stats()["requests"].get("read", 0)     # requests that reached the site, by RPC method
    mock.reset_stats()
    mock.stop()

    with running_mock("--demo", "300") as mock:   # or as a pytest fixture body
        ...

The process is started with ``--port 0 --admin-port 0`` and the real ports are
read from its start-up line (``sgcache-mock: url=... script_name=... script_key=...
admin=...``), so parallel test runs never race for a port. ``start_mock`` returns
once ``info`` answers. Pass ``--port N`` yourself to pin the public port.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
_LINE = re.compile(r"^sgcache-mock: (.*)$")


class MockProcess:
    """A running `sgcache mock` process and how to talk to it."""

    def __init__(self, proc: subprocess.Popen[str], fields: dict[str, str]) -> None:
        self.proc = proc
        self.url: str = fields["url"]
        self.admin_url: str = fields["admin"]
        self.script_name: str = fields["script_name"]
        self.script_key: str = fields["script_key"]
        self.output: list[str] = []  # later lines of stdout/stderr, for debugging

    # -- clients -------------------------------------------------------------------
    def sg(self, **kw: Any) -> Any:
        """A shotgun_api3.Shotgun on this site; script credentials unless overridden."""
        import shotgun_api3
        if not any(k in kw for k in ("login", "session_token", "script_name")):
            kw.setdefault("script_name", self.script_name)
            kw.setdefault("api_key", self.script_key)
        return shotgun_api3.Shotgun(self.url, **kw)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.admin_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def set_faults(self, **kw: Any) -> dict[str, Any]:
        """Set fault injection: latency, error_rate, error_codes, drop_rate, outage (s),
        event_delay (s), event_delay_rate, event_gap_rate, seed, reset=True."""
        return self.admin("POST", "/faults", kw)

    def clear_faults(self) -> dict[str, Any]:
        return self.admin("POST", "/faults", {"reset": True})

    def faults(self) -> dict[str, Any]:
        return self.admin("GET", "/faults")

    def stats(self) -> dict[str, Any]:
        """{"requests": {method: n}, "total": n, "injected": {...}, "since": t}."""
        return self.admin("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self.admin("POST", "/stats/reset", {})

    def save(self) -> dict[str, Any]:
        return self.admin("POST", "/save", {})

    # -- lifetime ---------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the site saves its --state), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> "MockProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _info_ok(url: str) -> bool:
    body = json.dumps({"method_name": "info", "params": []}).encode()
    req = urllib.request.Request(url + "/api3/json", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return "version" in json.loads(r.read())
    except OSError:
        return False


def start_mock(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> MockProcess:
    """Start `python -m sgcache.cli mock --host 127.0.0.1 --port 0 --admin-port 0 *args`.

    Returns once `info` answers. `timeout` covers start-up, which includes generating
    a `--demo` site (about a minute for 1,000,000 entities) or loading a `--state` file.
    Stats labels are RPC method names (`read`, `create` ...), `upload:<endpoint>`,
    `download` and `invalid` (bodies that are not an RPC).
    """
    cmd = [sys.executable, "-m", "sgcache.cli", "mock", "--host", "127.0.0.1"]
    if "--port" not in args:
        cmd += ["--port", "0"]
    if "--admin-port" not in args:
        cmd += ["--admin-port", "0"]
    cmd += list(args)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    fields: dict[str, str] | None = None
    early: list[str] = []
    assert proc.stdout is not None
    while fields is None:
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"mock site exited ({proc.returncode}):\n{''.join(early)}")
        early.append(line)
        m = _LINE.match(line.strip())
        if m and "url=" in line:
            fields = dict(re.findall(r"(\w+)=(\S+)", m.group(1)))
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mock site did not start:\n{''.join(early)}")
    mock = MockProcess(proc, fields)
    mock.output.extend(early)

    def drain() -> None:  # keep the pipe from filling up
        for line in proc.stdout:  # type: ignore[union-attr]
            mock.output.append(line)
            del mock.output[:-500]
    threading.Thread(target=drain, daemon=True).start()
    while not _info_ok(mock.url):
        if proc.poll() is not None or time.monotonic() > deadline:
            mock.stop()
            raise RuntimeError(f"mock site never answered info:\n{''.join(mock.output)}")
        time.sleep(0.05)
    return mock


@contextmanager
def running_mock(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Iterator[MockProcess]:
    """Context manager form, for `yield`-style pytest fixtures."""
    mock = start_mock(*args, env=env, timeout=timeout)
    try:
        yield mock
    finally:
        mock.stop()
