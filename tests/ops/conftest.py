"""Shared world for the operations tests: one mock site per module, primed caches per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from ..cache.dbs import BACKENDS, new_db_url
from ..e2e.harness import Site, cache_env, sgcache, start_site


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    """One small demo studio for the whole package; tests that write to it undo their writes."""
    s = start_site(demo=300)
    yield s
    s.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from new_db_url(backend, tmp_path_factory.mktemp("db"))


def prime(site: Site, db_url: str, data_dir: Path) -> dict[str, str]:
    """`sgcache scan --full` into db_url; returns the environment for more `sgcache` calls."""
    env = cache_env(site, db_url, data_dir)
    res = sgcache(env, "scan", "--full")
    assert res.returncode == 0, res.stderr[-4000:]
    return env
