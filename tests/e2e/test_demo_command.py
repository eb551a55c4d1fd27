"""The README's first command: `sgcache demo` primes a cache and serves the real client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from sgcache.cli.demo import MARKER, prepare_data_dir
from tests.support.procs import running_mock

from .harness import free_port


def test_demo_once_primes_serves_and_answers_the_real_client(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sgcache.cli", "demo", "--once", "--size", "300",
         "--port", str(free_port()), "--mock-port", str(free_port()), "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "shotgun_api3.Shotgun(" in res.stdout
    assert "demo check: read 5 shots through the cache" in res.stdout
    assert "demo check: 1 read(s) answered locally, 0 passed through to the site" in res.stdout
    assert (tmp_path / "demo" / "cache.sqlite").exists()


def test_demo_refuses_a_data_dir_it_did_not_create(tmp_path: Path) -> None:
    """`--data-dir` pointed at someone's directory must never delete it."""
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    res = subprocess.run(
        [sys.executable, "-m", "sgcache.cli", "demo", "--once", "--size", "10",
         "--port", str(free_port()), "--mock-port", str(free_port()), "--data-dir", str(precious)],
        capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0
    assert "not created by `sgcache demo`" in res.stderr and str(precious) in res.stderr
    assert (precious / "notes.txt").read_text() == "keep me"


def test_demo_data_dir_is_wiped_only_when_the_demo_made_it(tmp_path: Path) -> None:
    ours = tmp_path / "demo"
    prepare_data_dir(ours)  # created: marked
    (ours / "cache.sqlite").write_text("old demo cache")
    prepare_data_dir(ours)  # marked: wiped and remade
    assert sorted(p.name for p in ours.iterdir()) == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_data_dir(empty)  # an empty dir is adopted (nothing in it to lose) ...
    (empty / "cache.sqlite").write_text("old demo cache")
    (empty / "notes.txt").write_text("added by the user since")
    prepare_data_dir(empty)  # ... and later only the demo's own files are removed from it
    assert sorted(p.name for p in empty.iterdir()) == [MARKER, "notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(click.ClickException):
        prepare_data_dir(a_file)
    assert a_file.read_text() == "x"


def test_demo_check_fails_when_the_read_was_passed_through(tmp_path: Path) -> None:
    """`--once` proves the cache answered: on a cache never primed every read passes through."""
    with running_mock("--demo", "50") as mock:
        script = f"""
import asyncio, sys
from sgcache.config import load_config
from sgcache.cli.demo import _check_once
from sgcache.runtime import CacheService
config = load_config(env={{}}, overrides={{"shotgun_url": {mock.url!r}, "script_name": {mock.script_name!r},
    "script_key": {mock.script_key!r}, "data_dir": {str(tmp_path)!r}, "port": {free_port()}, "host": "127.0.0.1",
    "watch_events": False}})  # no sync either: nothing may prime the cache meanwhile
async def create():
    svc = await CacheService.open(config)  # the tables, but no full scan: nothing primed
    await svc.aclose()
asyncio.run(create())
sys.exit(_check_once(config, f"http://127.0.0.1:{{config.port}}",
                     {{"script_name": config.script_name, "script_key": {mock.script_key!r}}}))
"""
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "shots through the cache" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.returncode == 1 and "0 read(s) answered locally, 1 passed through" in res.stdout
