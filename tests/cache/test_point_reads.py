"""One-row reads answered without a worker thread: same answers, fresh data, safe fallbacks.

SQLite reads run inline on the loop; PostgreSQL reads on psycopg's asyncio connections.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sgcache.mock.builtin_schema import build_schema
from sgcache.read.engine import Passthrough, ReadEngine
from sgcache.read.point_reads import PointReads
from sgcache.store.tables import Store, make_engine

from .dbs import BACKENDS, new_db_url


def _params(shot_id: int) -> dict[str, Any]:
    return {"type": "Shot", "return_fields": ["code", "sg_status_list", "sg_sequence"],
            "filters": {"logical_operator": "and",
                        "conditions": [{"path": "id", "relation": "is", "values": [shot_id]}]},
            "return_only": "active", "paging": {"entities_per_page": 500, "current_page": 1}}


class Gate:
    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.is_fresh = True

    def fresh(self) -> bool:
        return self.is_fresh

    def __call__(self, params: Any) -> None:
        if params.get("type") in self.busy:
            raise Passthrough(f"entity type {params['type']} is being rebuilt")


class Answers:
    """PointReads driven from one event loop, as the server does."""

    def __init__(self, points: PointReads) -> None:
        self.points = points
        self.loop = asyncio.new_event_loop()

    def answer(self, params: Any) -> Any:
        return self.loop.run_until_complete(self.points.answer(params))

    def close(self) -> None:
        self.loop.run_until_complete(self.points.aclose())
        self.loop.close()


@pytest.fixture(params=BACKENDS)
def setup(request, tmp_path):  # type: ignore[no-untyped-def]
    for url in new_db_url(request.param, tmp_path):
        engine = make_engine(url)
        store = Store(engine, build_schema())
        store.create()
        with engine.begin() as conn:
            store.upsert(conn, "Sequence", [{"id": 1, "code": "SQ1"}])
            store.upsert(conn, "Shot", [{"id": 7, "code": "sh007", "sg_status_list": "ip",
                                         "sg_sequence": {"type": "Sequence", "id": 1}}])
        gate = Gate()
        svc = SimpleNamespace(store=store, reader=ReadEngine(store), read_gate=gate)
        points = Answers(PointReads(svc))
        yield svc, points, gate
        points.close()
        engine.dispose()


def _threaded(svc: Any, params: dict[str, Any]) -> dict[str, Any]:
    with svc.store.engine.connect() as conn:
        return svc.reader.read(conn, params)


def test_point_read_matches_the_threaded_path_and_sees_each_new_write(setup):  # type: ignore[no-untyped-def]
    svc, points, _ = setup
    assert points.answer(_params(7)) is None  # first time: planned in a worker thread
    first = _threaded(svc, _params(7))
    assert points.answer(_params(7)) == first
    assert first["entities"][0]["sg_sequence"] == {"type": "Sequence", "id": 1, "name": "SQ1"}
    for status in ("fin", "hld", "omt"):  # the loop's own connection never reads an old snapshot
        with svc.store.engine.begin() as conn:
            svc.store.upsert(conn, "Shot", [{"id": 7, "code": "sh007", "sg_status_list": status,
                                             "sg_sequence": {"type": "Sequence", "id": 1}}])
        assert points.answer(_params(7))["entities"][0]["sg_status_list"] == status
    assert points.answer(_params(8)) == {"entities": [], "paging_info": {"has_next_page": False}}


def test_point_read_respects_the_rebuild_gate_and_leaves_stale_marks_to_a_thread(setup):  # type: ignore[no-untyped-def]
    svc, points, gate = setup
    _threaded(svc, _params(7))
    gate.busy.add("Shot")
    with pytest.raises(Passthrough, match="being rebuilt"):
        points.answer(_params(7))
    gate.busy.clear()
    gate.is_fresh = False  # re-reading the marks would touch the shared pool: not on the loop
    assert points.answer(_params(7)) is None


def test_a_busy_sqlite_database_sends_the_read_to_a_thread_instead_of_raising(setup, monkeypatch):  # type: ignore[no-untyped-def]
    import sqlite3

    from sqlalchemy.exc import OperationalError
    svc, points, _ = setup
    if svc.store.dialect != "sqlite":
        pytest.skip("SQLite's busy timeout")
    _threaded(svc, _params(7))
    real = svc.reader.read

    def locked(conn: Any, params: Any) -> Any:  # what SQLite says when its busy timeout runs out
        raise OperationalError("SELECT ...", {}, sqlite3.OperationalError("database is locked"))
    monkeypatch.setattr(svc.reader, "read", locked)
    assert points.answer(_params(7)) is None
    monkeypatch.setattr(svc.reader, "read", real)
    assert points.answer(_params(7))["entities"][0]["code"] == "sh007"  # the connection is still good


def test_a_broken_postgresql_connection_is_dropped_and_the_read_goes_to_a_thread(setup):  # type: ignore[no-untyped-def]
    svc, points, _ = setup
    if svc.store.dialect != "postgresql":
        pytest.skip("PostgreSQL's asyncio connections")
    _threaded(svc, _params(7))
    assert points.answer(_params(7)) is not None
    (aconn,) = points.points._pg_idle
    with svc.store.engine.connect() as conn:  # the server ends that session under us
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({aconn.info.backend_pid})")
    assert points.answer(_params(7)) is None
    assert points.points._pg_idle == []
    assert points.answer(_params(7))["entities"][0]["code"] == "sh007"  # a new connection


def test_other_databases_always_use_the_thread_pool() -> None:
    store = SimpleNamespace(dialect="mysql")
    reader = SimpleNamespace(is_point_read=lambda p: True)
    points = Answers(PointReads(SimpleNamespace(store=store, reader=reader, read_gate=None)))
    assert points.answer(_params(7)) is None
    points.close()
