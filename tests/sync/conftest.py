from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.cache.dbs import BACKENDS, new_db_url
from tests.support.procs import MockProcess, running_mock

from .support import NOEVENTS, CacheEnv, CacheView, short_dir


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def mock() -> Iterator[MockProcess]:
    """A fresh site per test: its event log and data start from the same demo state."""
    with running_mock("--demo", "300", "--api-user", f"{NOEVENTS[0]}:{NOEVENTS[1]}:noevents") as m:
        yield m


def make_cache(mock: MockProcess, backend: str, tmp_path: Path, **env: str) -> Iterator[CacheEnv]:
    data = short_dir()
    for url in new_db_url(backend, tmp_path):
        c = CacheEnv(mock, url, data, extra_env={"SGCACHE_POLL_INTERVAL": "3600",
                                                  "SGCACHE_SCAN_INTERVAL": "3600", **env})
        c.prime()
        try:
            yield c
        finally:
            c.stop()
            shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def cache(mock: MockProcess, backend: str, tmp_path: Path) -> Iterator[CacheEnv]:
    """A primed cache (polling and scans only on request, via `ctrl`)."""
    yield from make_cache(mock, backend, tmp_path)


@pytest.fixture
def view(cache: CacheEnv) -> Iterator[CacheView]:
    v = CacheView(cache.db_url)
    yield v
    v.close()
