"""Primary-key reads answered without a worker thread.

`find_one("Shot", [["id", "is", N]], fields)` is the commonest call a pipeline makes,
and looking one row up costs less than handing the request to a worker thread and
waking the loop again. Such reads (`ReadEngine.is_point_read`: one row by id, a plan
already built, no multi-entity fields) are answered here; everything else, and any
point read this module cannot run at once, still goes to the thread pool.

- SQLite: inline on the event loop (tens of microseconds), on a connection of the
  loop's own (an engine with exactly one connection, so it never waits for the shared
  pool) with a short busy timeout: if SQLite cannot answer at once (a WAL recovery,
  say), the read goes to a worker thread instead of stalling every other request.
- PostgreSQL: on a few asyncio connections of psycopg's in autocommit mode (one round
  trip per read: no BEGIN, ROLLBACK or pool ping), which psycopg prepares on the
  server after a few uses. When all are busy, the read goes to a worker thread.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from ..store.replicas import TCP_SETTINGS
from ..store.tables import make_engine

log = logging.getLogger("sgcache.http")

#: How long the loop's SQLite connection waits for a lock before giving up (ms).
BUSY_TIMEOUT_MS = 20
#: How much of the SQLite file the loop's connection maps into memory.
MMAP_BYTES = 1 << 30
#: PostgreSQL connections kept for point reads (per server process).
PG_CONNECTIONS = 4


class PointReads:
    """Answers point reads without a worker thread; `answer` returns None otherwise."""

    def __init__(self, service: Any, *, pg_connections: int = PG_CONNECTIONS) -> None:
        self.service = service
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._pg_max = pg_connections
        self._pg_idle: list[Any] = []
        self._pg_open = 0
        self._pg_url: str | None = None
        self._replica_idle: dict[str, list[Any]] = {}  # replica URL -> idle connections

    async def answer(self, params: Any, *, engine: Engine | None = None) -> dict[str, Any] | None:
        """The read's result, or None when it should run in a worker thread.

        Raises what the read engine raises (Passthrough, Fault) like the threaded path.
        `engine` is a PostgreSQL replica to read on (store/replicas.py) instead of the store's.
        """
        svc = self.service
        dialect = svc.store.dialect
        if dialect not in ("sqlite", "postgresql") or not svc.reader.is_point_read(params):
            return None
        gate = getattr(svc, "read_gate", None)
        if gate is not None:
            if not gate.fresh():  # re-reading the rebuild marks is a worker thread's job
                return None
            gate(params)
        if dialect == "sqlite":
            return self._sqlite(params)
        return await self._postgresql(params, engine or svc.store.engine)

    # -- SQLite ------------------------------------------------------------------------------
    def _connection(self, engine: Engine) -> Connection:
        if self._conn is None or self._engine is None or self._engine.url != engine.url:
            self._close_sqlite()
            self._engine = make_engine(engine.url.render_as_string(hide_password=False), poolclass=StaticPool)
            self._conn = self._engine.connect()
            self._conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Pages read through a memory map: a lookup costs no read() calls.
            self._conn.exec_driver_sql(f"PRAGMA mmap_size = {MMAP_BYTES}")
            self._conn.rollback()
        return self._conn

    def _sqlite(self, params: Any) -> dict[str, Any] | None:
        svc = self.service
        conn = self._connection(svc.store.engine)
        try:
            return svc.reader.read(conn, params)
        except OperationalError as e:  # locked or busy: let a worker thread wait for it
            log.debug("inline read gave way (%s); using a worker thread", e.orig)
            return None
        finally:
            conn.rollback()  # end the read transaction: the next read sees new writes

    # -- PostgreSQL ----------------------------------------------------------------------------
    async def _postgresql(self, params: Any, engine: Engine) -> dict[str, Any] | None:
        import psycopg
        svc = self.service
        point, pk, req = svc.reader.point(params, engine.dialect)
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        if url != self._pg_url and engine is svc.store.engine:  # another primary: start over
            idle, self._pg_idle = self._pg_idle, []
            self._pg_open -= len(idle)
            self._pg_url = url
            for old in idle:
                await _close_quietly(old)
        pool = self._pg_idle if url == self._pg_url else self._replica_idle.setdefault(url, [])
        if pool:
            aconn = pool.pop()
        elif self._pg_open < self._pg_max * (1 + len(self._replica_idle)):
            self._pg_open += 1
            try:
                extra = {} if url == self._pg_url else TCP_SETTINGS  # a replica's host may go silent
                aconn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=2, **extra)
            except Exception as e:
                self._pg_open -= 1
                log.warning("no PostgreSQL connection for point reads (%s); using worker threads",
                            type(e).__name__)
                return None
        else:
            return None  # all busy: the thread pool has more
        try:
            rows = await point.run_async(aconn, pk)
        except BaseException as e:  # a broken or cancelled connection is not reused
            self._pg_open -= 1
            await _close_quietly(aconn)
            if isinstance(e, psycopg.Error):
                log.debug("point read on PostgreSQL failed (%s); using a worker thread", type(e).__name__)
                return None
            raise
        if url == self._pg_url or url in self._replica_idle:
            (self._pg_idle if url == self._pg_url else self._replica_idle[url]).append(aconn)
        else:  # closed or switched while we waited
            self._pg_open -= 1
            await _close_quietly(aconn)
        return svc.reader.render_point(req, rows)

    async def _close_pg(self) -> None:
        idle, self._pg_idle = self._pg_idle, []
        for more in self._replica_idle.values():
            idle.extend(more)
        self._replica_idle = {}
        self._pg_open -= len(idle)
        self._pg_url = None
        for aconn in idle:
            await _close_quietly(aconn)

    # -- shutdown ------------------------------------------------------------------------------
    def _close_sqlite(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()
        self._conn = self._engine = None

    async def aclose(self) -> None:
        self._close_sqlite()
        await self._close_pg()


async def _close_quietly(aconn: Any) -> None:
    try:
        await aconn.close()
    except Exception:  # pragma: no cover - closing a broken connection
        pass
