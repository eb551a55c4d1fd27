"""Primary-key reads on SQLite, answered on the event loop itself.

`find_one("Shot", [["id", "is", N]], fields)` is the commonest call a pipeline makes.
On the embedded SQLite store, looking one row up costs a few tens of microseconds,
less than handing the request to a worker thread and waking the loop again. Such reads
(`ReadEngine.is_point_read`: one row by id, a plan already built, no multi-entity
fields) run inline; everything else still goes to the thread pool.

The loop has a connection of its own, from an engine of its own with exactly one
connection, so it never waits for the shared pool, and a short busy timeout: if SQLite
cannot answer at once (a WAL recovery, say), the read goes to a worker thread instead
of stalling every other request.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from .store import make_engine

log = logging.getLogger("sgcache.http")

#: How long the loop's connection waits for a SQLite lock before giving up (ms).
BUSY_TIMEOUT_MS = 20


class PointReads:
    """Runs one-row reads inline when the store is SQLite; `answer` returns None otherwise."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    def _connection(self, engine: Engine) -> Connection:
        if self._conn is None or self._engine is None or self._engine.url != engine.url:
            self.close()
            self._engine = make_engine(engine.url.render_as_string(hide_password=False), poolclass=StaticPool)
            self._conn = self._engine.connect()
            self._conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.rollback()
        return self._conn

    def answer(self, params: Any) -> dict[str, Any] | None:
        """The read's result, or None when it should run in a worker thread.

        Raises what the read engine raises (Passthrough, Fault) like the threaded path.
        """
        svc = self.service
        store = svc.store
        if store.dialect != "sqlite" or not svc.reader.is_point_read(params):
            return None
        gate = getattr(svc, "read_gate", None)
        if gate is not None:
            if not gate.fresh():  # re-reading the rebuild marks is a worker thread's job
                return None
            gate(params)
        conn = self._connection(store.engine)
        try:
            return svc.reader.read(conn, params)
        except OperationalError as e:  # locked or busy: let a worker thread wait for it
            log.debug("inline read gave way (%s); using a worker thread", e.orig)
            return None
        finally:
            conn.rollback()  # end the read transaction: the next read sees new writes

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()
        self._conn = self._engine = None
