"""One mock site and one primed cache database per backend for the whole package."""

from __future__ import annotations

from typing import Iterator

import pytest

from ..cache.dbs import BACKENDS, new_db_url
from ..e2e.harness import Site, cache_env, sgcache, start_site
from .servers import Primed

#: A second script the site knows, left off the cache's allow-list in the allow-list test.
OTHER_SCRIPT = ("robustness_other", "other-key-7f3a9c21e5d04b8e")


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    s = start_site("--api-user", f"{OTHER_SCRIPT[0]}:{OTHER_SCRIPT[1]}", demo=300)
    yield s
    s.stop()


def _prime(site: Site, db_url: str, tmp: object) -> Primed:
    env = cache_env(site, db_url, tmp)  # type: ignore[arg-type]
    res = sgcache(env, "scan", "--full")
    assert res.returncode == 0, res.stderr[-4000:]
    return Primed(site, db_url, tmp)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def primed(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primed]:
    """A SQLite cache of the site, for tests whose subject is not the database."""
    tmp = tmp_path_factory.mktemp("robust-sqlite")
    for url in new_db_url("sqlite", tmp):
        yield _prime(site, url, tmp)


@pytest.fixture(scope="session", params=BACKENDS)
def primed_any(request: pytest.FixtureRequest, site: Site,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primed]:
    """A cache of the site on each backend (PostgreSQL when SGCACHE_TEST_PG_URL is set)."""
    tmp = tmp_path_factory.mktemp("robust-" + request.param)
    for url in new_db_url(request.param, tmp):
        yield _prime(site, url, tmp)
