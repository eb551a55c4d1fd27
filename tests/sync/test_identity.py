"""A cache database knows which site it mirrors, and its bookkeeping holds only what is read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from sgcache.config import Config, load_config
from sgcache.mock.builtin_schema import build_schema
from sgcache.runtime import CacheService

from .support import free_port


def config_for(db_url: str, site_url: str, tmp_path: Path) -> Config:
    """A cache created from a schema file: opening it needs no site."""
    schema = tmp_path / "chosen.json"
    if not schema.exists():
        build_schema().dump(schema)
    return load_config(env={}, overrides={"shotgun_url": site_url, "script_name": "s", "script_key": "k",
                                          "db_url": db_url, "schema": str(schema), "data_dir": str(tmp_path)})


def open_close(config: Config) -> None:
    async def run() -> None:
        svc = await CacheService.open(config)
        await svc.aclose()
    asyncio.run(run())


def state(db_url: str) -> dict[str, str]:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as c:
            return dict(c.execute(sa.text("SELECT key, value FROM _sgcache_state")).all())
    finally:
        eng.dispose()


def test_a_cache_refuses_to_serve_another_site(backend: str, db_url: str, tmp_path: Path) -> None:
    site = f"http://127.0.0.1:{free_port()}"
    open_close(config_for(db_url, site.replace("://", "://sync:s3cr3t@") + "/", tmp_path))
    recorded = state(db_url)
    assert recorded["site_url"] == f'"{site}"'  # recorded without credentials
    assert not any("s3cr3t" in v for v in recorded.values())
    open_close(config_for(db_url, site, tmp_path))  # the same site, however it is spelled

    other = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError) as err:
        open_close(config_for(db_url, other, tmp_path))
    msg = str(err.value)
    assert site in msg and other in msg and "sgcache scan --full" in msg

    # The same site at a new address: the operator says where it was, once.
    moved = config_for(db_url, other, tmp_path).replace(site_moved_from=site + "/")
    open_close(moved)
    open_close(config_for(db_url, other, tmp_path))
    with pytest.raises(RuntimeError):
        open_close(config_for(db_url, site, tmp_path))


def test_fields_table_records_only_what_is_read(backend: str, db_url: str, tmp_path: Path) -> None:
    """`exposed` was always true and never read: gone, and dropped from older databases."""
    config = config_for(db_url, "http://127.0.0.1:8020", tmp_path)
    open_close(config)
    eng = sa.create_engine(db_url)
    try:
        assert "exposed" not in {c["name"] for c in sa.inspect(eng).get_columns("_sgcache_fields")}
        with eng.begin() as c:  # as an older sgcache made it, before sites were recorded
            c.execute(sa.text("ALTER TABLE _sgcache_fields ADD COLUMN exposed BOOLEAN NOT NULL DEFAULT TRUE"))
            c.execute(sa.text("DELETE FROM _sgcache_state WHERE key = 'site_url'"))
    finally:
        eng.dispose()
    open_close(config)
    eng = sa.create_engine(db_url)
    try:
        assert "exposed" not in {c["name"] for c in sa.inspect(eng).get_columns("_sgcache_fields")}
    finally:
        eng.dispose()
    assert state(db_url)["site_url"] == '"http://127.0.0.1:8020"'  # adopted on first open


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> object:
    from tests.cache.dbs import new_db_url
    yield from new_db_url(backend, tmp_path)
