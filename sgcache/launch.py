"""Starting our own processes on loopback: free ports, readiness, the mock's banner.

Used by `sgcache demo`, the end-to-end tests and the benchmarks, so all of them agree
on what "started" means.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from typing import Any

import httpx

_BANNER_RE = re.compile(r"^sgcache-mock:\s+(.*)$")


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until the api3 `info` call answers HTTP 200 at url (raise if proc dies first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.post(url + "/api3/json", json={"method_name": "info", "params": []},
                          timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def read_mock_banner(proc: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """Read `sgcache mock`'s start-up line (key=value pairs) and wait until it answers."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"mock site exited with code {proc.returncode}")
            continue
        m = _BANNER_RE.match(line.strip())
        if m:
            info = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            wait_http(info["url"], timeout=max(deadline - time.monotonic(), 1), proc=proc)
            return info
    proc.kill()
    raise RuntimeError("mock site did not start in time")
