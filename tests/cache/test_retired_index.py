"""Retired rows have their own small index; reads of active rows never go through one.

An index on `_active` made SQLite walk half of it, then the table, for every read of
active rows with a filter on an unindexed field (a third slower than scanning the
table), and cost every full scan one more sort of each table. The partial index of
retired ids serves what needs them (reads of retired rows, the status page's counts),
and an older database trades its index for it when it is opened.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from sgcache.config import load_config
from sgcache.mock.builtin_schema import build_schema
from sgcache.read.engine import ReadEngine
from sgcache.runtime import CacheService
from sgcache.store.tables import Store

from .dbs import new_db_url


def _read(reader: ReadEngine, store: Store, etype: str, return_only: str, conds: list[Any]) -> list[int]:
    params = {"type": etype, "return_fields": ["id"], "return_only": return_only,
              "filters": {"logical_operator": "and", "conditions": conds},
              "paging": {"entities_per_page": 500, "current_page": 1}, "return_paging_info_without_counts": True}
    with store.engine.connect() as conn:
        return [e["id"] for e in reader.read(conn, params)["entities"]]


def _plans(store: Store, run: Any) -> list[str]:
    """SQLite's query plan of every SELECT on an entity table that `run` makes."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and '"Task"' in statement:
            seen.append((statement, parameters))
    sa.event.listen(store.engine, "before_cursor_execute", grab)
    try:
        run()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", grab)
    assert seen
    with store.engine.connect() as conn:
        return [" / ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + s, p).all()) for s, p in seen]


def test_counts_and_reads_by_state(loaded_store: Store, demo_records: list[tuple[str, dict[str, Any]]]) -> None:
    reader = ReadEngine(loaded_store)
    tasks = [r for t, r in demo_records if t == "Task"]
    retired = sorted(r["id"] for r in tasks if r.get("__retired"))
    assert retired and len(retired) < len(tasks)
    with loaded_store.engine.connect() as conn:
        assert loaded_store.counts(conn, "Task") == {"active": len(tasks) - len(retired), "retired": len(retired)}
    assert _read(reader, loaded_store, "Task", "retired", []) == retired
    status = sorted({r["sg_status_list"] for r in tasks if r.get("sg_status_list")})[0]
    assert _read(reader, loaded_store, "Task", "active",
                 [{"path": "sg_status_list", "relation": "is", "values": [status]}]) == \
        sorted(r["id"] for r in tasks if not r.get("__retired") and r.get("sg_status_list") == status)


def test_sqlite_plans_use_the_retired_index_only_for_retired_rows(
        backend: str, loaded_store: Store, demo_records: list[tuple[str, dict[str, Any]]]) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's planner; PostgreSQL weighs its own statistics")
    with loaded_store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")  # as a long-running cache's statistics would say
    reader = ReadEngine(loaded_store)
    cond = [{"path": "sg_status_list", "relation": "is", "values": ["ip"]}]
    retired = _plans(loaded_store, lambda: _read(reader, loaded_store, "Task", "retired", cond))
    assert all("ix_Task__retired" in p for p in retired), retired
    active = _plans(loaded_store, lambda: _read(reader, loaded_store, "Task", "active", cond))
    assert all(p.startswith("SCAN") and "INDEX" not in p for p in active), active
    counts = _plans(loaded_store, lambda: loaded_store.counts(loaded_store.engine.connect(), "Task"))
    assert any("ix_Task__retired" in p for p in counts) and not any(p.startswith("SCAN Task") and "INDEX" not in p for p in counts), counts


def _index_names(url: str) -> set[str]:
    eng = sa.create_engine(url)
    try:
        return {ix["name"] for ix in sa.inspect(eng).get_indexes("Task")}
    finally:
        eng.dispose()


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    yield from new_db_url(backend, tmp_path)


def test_an_older_database_trades_its_active_index_when_opened(backend: str, db_url: str, tmp_path: Path) -> None:
    schema = tmp_path / "chosen.json"
    build_schema().dump(schema)
    config = load_config(env={}, overrides={"shotgun_url": "http://127.0.0.1:9", "script_name": "s",
                                            "script_key": "k", "db_url": db_url, "schema": str(schema),
                                            "data_dir": str(tmp_path)})

    def open_close() -> Store:
        async def run() -> Store:
            svc = await CacheService.open(config)
            await svc.aclose()
            return svc.store
        return asyncio.run(run())

    store = open_close()
    assert "ix_Task__retired" in _index_names(db_url) and "ix_Task__active" not in _index_names(db_url)
    with store.engine.begin() as conn:  # as an older sgcache made the tables
        store.upsert(conn, "Task", [{"id": i, "content": f"t{i}"} for i in range(1, 6)], active=True)
        store.upsert(conn, "Task", [{"id": 9, "content": "gone"}], active=False)
        for etype in ("Task", "Shot"):
            conn.exec_driver_sql(f'DROP INDEX "ix_{etype}__retired"')
            conn.exec_driver_sql(f'CREATE INDEX "ix_{etype}__active" ON "{etype}" (_active)')
    store.engine.dispose()
    store = open_close()
    assert "ix_Task__retired" in _index_names(db_url) and "ix_Task__active" not in _index_names(db_url)
    eng = sa.create_engine(db_url)
    try:
        assert not {ix["name"] for ix in sa.inspect(eng).get_indexes("Shot")} & {"ix_Shot__active"}
        with eng.connect() as conn:
            assert store.counts(conn, "Task") == {"active": 5, "retired": 1}
    finally:
        eng.dispose()
