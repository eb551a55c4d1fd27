"""The README's first command: `sgcache demo` primes a cache and serves the real client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .harness import free_port


def test_demo_once_primes_serves_and_answers_the_real_client(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sgcache.cli", "demo", "--once", "--size", "300",
         "--port", str(free_port()), "--mock-port", str(free_port()), "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "shotgun_api3.Shotgun(" in res.stdout
    assert "demo check: read 5 shots through the cache" in res.stdout
    assert (tmp_path / "demo" / "cache.sqlite").exists()
