"""One writer: only the process holding the leader lock applies events and scans.

PostgreSQL: a session advisory lock on a dedicated connection; if the leader dies its
connection closes, the lock is released, and a follower (retrying every second or so)
takes over. SQLite: an exclusive `flock` on a file next to the database, released by
the kernel when the process dies. Write-through needs no lock: versioned rows make
concurrent writers safe.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, text

from ..config import Config

log = logging.getLogger("sgcache.leader")

#: The advisory lock key: "sgcache" as a 64-bit number, fixed so every version agrees.
PG_LOCK_KEY = 0x7367636163686501


class LeaderLock(Protocol):
    retry_seconds: float

    async def acquire(self) -> bool: ...
    async def still_held(self) -> bool: ...
    def release(self) -> None: ...


class PgAdvisoryLock:
    """pg_try_advisory_lock on a connection kept open for as long as we lead."""

    def __init__(self, engine: Engine, key: int = PG_LOCK_KEY, retry_seconds: float = 1.0) -> None:
        self.engine = engine
        self.key = key
        self.retry_seconds = retry_seconds
        self._conn: Any = None

    def _try(self) -> bool:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        if not got:
            self._close()
        return got

    async def acquire(self) -> bool:
        try:
            return await asyncio.to_thread(self._try)
        except Exception as e:
            log.warning("leader lock: %s", e)
            self._close()
            return False

    def _check(self) -> bool:
        if self._conn is None:
            return False
        # Our own session still holds it if pg_locks lists it for our backend.
        return bool(self._conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND ((classid::bigint << 32) | objid::bigint) = :k"), {"k": self.key}).scalar())

    async def still_held(self) -> bool:
        try:
            return await asyncio.to_thread(self._check)
        except Exception as e:
            log.warning("leader lock connection failed: %s", e)
            self._close()
            return False

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # pragma: no cover - a broken connection is closed anyway
                pass
            self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except Exception:  # pragma: no cover
                pass
        self._close()


class FileLock:
    """An exclusive flock on `<database>.leader`; the kernel drops it when we die."""

    def __init__(self, path: Path, retry_seconds: float = 0.5) -> None:
        self.path = path
        self.retry_seconds = retry_seconds
        self._fd: int | None = None

    async def acquire(self) -> bool:
        import fcntl
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def leader_lock(config: Config, engine: Engine) -> LeaderLock:
    """The lock that fits the database: advisory on PostgreSQL, a file lock otherwise."""
    if engine.dialect.name == "postgresql":
        return PgAdvisoryLock(engine)
    url = config.database_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return FileLock(Path(url[len("sqlite:///"):] + ".leader"))
    return FileLock(Path(config.data_dir) / "sync.leader")
