from __future__ import annotations

from typing import Any, Iterator

import pytest

from sgcache.mock.builtin_schema import build_schema
from sgcache.mock.demo import generate
from sgcache.read.engine import ReadEngine
from sgcache.store.tables import Store, make_engine

from .dbs import BACKENDS, new_db_url


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def demo_records() -> list[tuple[str, dict[str, Any]]]:
    return list(generate(400, seed=7))


@pytest.fixture(scope="module")
def loaded_store(backend: str, demo_records: list[tuple[str, dict[str, Any]]],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store of the built-in schema holding the demo site, loaded directly."""
    for url in new_db_url(backend, tmp_path_factory.mktemp("db")):
        engine = make_engine(url)
        store = Store(engine, build_schema())
        store.create()
        with engine.begin() as conn:
            for etype, rec in demo_records:
                if etype not in store:
                    continue
                rec = dict(rec)
                retired = rec.pop("__retired", False)
                store.upsert(conn, etype, [rec], active=not retired)
        yield store
        engine.dispose()


@pytest.fixture
def reader(loaded_store: Store) -> ReadEngine:
    return ReadEngine(loaded_store)
