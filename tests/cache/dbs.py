"""Throwaway databases for cache tests: a SQLite file, or a fresh PostgreSQL database.

PostgreSQL tests run when SGCACHE_TEST_PG_URL is set (CI's .ci/run sets it), skip
with a reason otherwise, and fail instead of skipping when SGCACHE_REQUIRE_PG is set.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pg_base_url() -> str | None:
    url = os.environ.get("SGCACHE_TEST_PG_URL")
    if not url:
        if os.environ.get("SGCACHE_REQUIRE_PG"):
            pytest.fail("SGCACHE_REQUIRE_PG is set but SGCACHE_TEST_PG_URL is not")
        pytest.skip("PostgreSQL tests need SGCACHE_TEST_PG_URL (run them via .ci/run or .ci/pg-throwaway)")
    return url


def new_db_url(backend: str, tmp: Path) -> Iterator[str]:
    """Yield the URL of an empty database of the given backend, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / ('cache-' + uuid.uuid4().hex[:8] + '.sqlite')}"
        return
    base = pg_base_url()
    assert base is not None
    import sqlalchemy as sa
    name = "sgtest_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
