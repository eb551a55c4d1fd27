"""Reads on PostgreSQL streaming replicas: which database answers a read, and when.

An API server at another location reads from a replica there (`SGCACHE_DB_READ_URLS`)
instead of paying a WAN round trip to the primary per read; everything it writes
(write-through) goes to the primary. PostgreSQL replays the primary's WAL on the
replica; this module only decides, per read, whether that replica is good enough:

- **Health**: every PROBE_EVERY s a monitor asks the primary for its WAL position
  (`pg_current_wal_lsn()`) and each replica for what it has replayed
  (`pg_last_wal_replay_lsn()`). A replica's lag is measured on this process's own
  monotonic clock, so no two hosts' clocks are compared: it is how long ago the primary
  was first seen at a position the replica has not replayed yet (0 when it has replayed
  everything seen). A replica further behind than `max_lag`, unreachable, or no longer
  in recovery (promoted) is left out until a probe finds it back within the limit.
- **Read-your-writes**: after a caller's write-through commits, the primary's WAL
  position is recorded in that caller's slots of a small memory-mapped file in the data
  dir (`LsnSlots`), so every worker on the host knows it. A later read by the caller
  uses a replica that has replayed that far; it waits up to RYW_WAIT s for one, then
  reads on the primary. Across hosts nothing is shared: the balancer must keep a caller
  on one host (docs/deploy.md).
- **No failed reads**: a read that fails on a replica (it went down, a recovery
  conflict cancelled the query) is run again on the primary, and the replica is left out
  until the next probe finds it healthy. A replica whose probe gets no answer within
  PROBE_TIMEOUT (hung) is left out too; probes and replay checks run on their own
  threads, so calls stuck on it never take the threads the server needs.

The lag in events compares the sync leader's position (`last_event_id`) as the primary
and the replica each record it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("sgcache.replicas")

T = TypeVar("T")

#: Seconds between probes of the primary and the replicas.
PROBE_EVERY = 0.5
#: Longest a read waits for a replica to replay its caller's write before using the primary.
RYW_WAIT = 1.0
#: Seconds a replica's connect may take before it counts as down.
CONNECT_TIMEOUT = 2
#: Seconds a probe of a replica may take: one that does not answer (hung, or its host gone
#: silent) is left out meanwhile, and not probed again until that probe returns.
PROBE_TIMEOUT = 2.0
#: libpq settings for replica connections: the kernel gives up on a connection whose sent
#: data stays unacknowledged this long (ms), and keepalives find a silent peer when idle.
TCP_SETTINGS = {"tcp_user_timeout": 5000, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
        "keepalives_count": 2}
#: Seconds of the primary's positions kept to measure lag against.
HISTORY_SECONDS = 600.0

_PRIMARY_SQL = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
                "(SELECT value FROM _sgcache_state WHERE key = 'last_event_id')")
_REPLICA_SQL = ("SELECT pg_is_in_recovery(), pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint, "
                "(SELECT value FROM _sgcache_state WHERE key = 'last_event_id')")
_REPLAY_SQL = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"
_NOT_IDENTITY = frozenset({"api_key", "script_key", "password", "user_password"})


def replica_name(url: str) -> str:
    """host:port/database of a URL: what status pages show (never its credentials)."""
    from sqlalchemy.engine import make_url
    u = make_url(url)
    return f"{u.host or 'local'}:{u.port or 5432}/{u.database or ''}"


@dataclass
class Replica:
    """One replica and what the last probe found."""

    name: str
    engine: Engine
    in_use: bool = False
    replayed: int | None = None  # WAL bytes replayed (pg_wal_lsn_diff from 0/0)
    lag_seconds: float | None = None
    lag_events: int | None = None
    error: str | None = None
    probed_at: float = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "in_use": self.in_use, "lag_seconds": self.lag_seconds,
                "lag_events": self.lag_events, "error": self.error}


class LsnSlots:
    """Each caller's last write position, shared by every process serving a data dir.

    A memory-mapped file: a random salt, then `slots` 64-bit WAL positions. A caller's
    key hashes (salted) to a slot that keeps the highest position written to it; a
    collision only makes another caller's read wait for a write it need not see.
    """

    HEADER = 16

    def __init__(self, path: Path | None, slots: int = 1 << 14) -> None:
        self.slots = slots
        size = self.HEADER + slots * 8
        self._fd: int | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
                self._map: mmap.mmap | bytearray = mmap.mmap(fd, size)
                self._fd = fd
            except OSError as e:  # a read-only data dir: this process alone
                log.warning("write positions file %s unavailable (%s); read-your-writes is per process", path, e)
        if self._fd is None:
            self._map = bytearray(size)
        with self._locked():
            if not any(self._map[:self.HEADER]):
                self._map[:self.HEADER] = os.urandom(self.HEADER)
        self._salt = bytes(self._map[:self.HEADER])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def caller_slots(self, auth: Any) -> list[int]:
        """A caller's slots: their credentials, and the person they act as (no secret kept)."""
        if not isinstance(auth, Mapping):
            return [0]
        material = repr(sorted((str(k), repr(v)) for k, v in auth.items() if k not in _NOT_IDENTITY))
        out = [self._slot(b"cred\0" + material.encode("utf-8", "surrogatepass"))]
        person = auth.get("sudo_as_login") or auth.get("user_login") or auth.get("script_name")
        if isinstance(person, str) and person:
            out.append(self._slot(b"person\0" + person.encode("utf-8", "surrogatepass")))
        return out

    def _slot(self, material: bytes) -> int:
        digest = hashlib.sha256(self._salt + material).digest()
        return 1 + int.from_bytes(digest[:8], "little") % (self.slots - 1)

    def forget_beyond(self, position: Callable[[], int]) -> int:
        """Clear positions past the primary's own (`position()`, read under the lock so no
        write in between is lost): left by another timeline, a restored or failed-over
        primary, they would make reads wait for a position it will not reach soon."""
        with self._locked():
            now = position()
            stale = [s for s in range(1, self.slots)
                     if struct.unpack_from("<q", self._map, self.HEADER + s * 8)[0] > now]
            for s in stale:
                struct.pack_into("<q", self._map, self.HEADER + s * 8, 0)
        return len(stale)

    def get(self, slots: list[int]) -> int:
        return max(struct.unpack_from("<q", self._map, self.HEADER + s * 8)[0] for s in slots)

    def mark(self, slots: list[int], lsn: int) -> None:
        with self._locked():
            for s in slots:
                if struct.unpack_from("<q", self._map, self.HEADER + s * 8)[0] < lsn:
                    struct.pack_into("<q", self._map, self.HEADER + s * 8, lsn)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Route:
    """Where one read runs: a replica, falling back to the primary if it fails there."""

    primary: Engine
    replica: Replica | None = None
    on_failure: Callable[[Replica, BaseException], None] | None = None
    waited: float = 0.0

    @property
    def engine(self) -> Engine:
        return self.replica.engine if self.replica is not None else self.primary

    def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` on the replica, or on the primary if the replica fails it."""
        if self.replica is not None:
            try:
                with self.replica.engine.connect() as conn:
                    return fn(conn)
            except DBAPIError as e:  # down, or a recovery conflict: the primary answers
                if self.on_failure is not None:
                    self.on_failure(self.replica, e)
        with self.primary.connect() as conn:
            return fn(conn)


@dataclass
class _Probe:
    at: float
    lsn: int
    event_id: int | None


class Replicas:
    """The replicas of one primary: their health, and the route of each read."""

    def __init__(self, primary: Engine, urls: tuple[str, ...] | list[str], *, max_lag: float = 5.0,
                 data_dir: str | Path | None = None, now: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.max_lag = max_lag
        self._now = now
        self.replicas = [Replica(replica_name(u), _replica_engine(u)) for u in urls]
        self.slots = LsnSlots(Path(data_dir) / "replica-writes.lsn" if data_dir is not None else None)
        self._history: deque[_Probe] = deque()
        self._primary_at: _Probe | None = None
        self.primary_error: str | None = None
        self._given_up: dict[int, int] = {}  # slot -> position a read already waited for in vain
        self._lock = threading.Lock()
        # Probes and replay checks run on threads of their own: calls stuck on a hung
        # replica must not take the threads the rest of the server needs.
        self._pool = ThreadPoolExecutor(max_workers=2 + 2 * len(self.replicas), thread_name_prefix="replica")
        self.stats = {"replica_reads": 0, "primary_reads": 0, "waits": 0, "fallbacks": 0}

    # -- probing -------------------------------------------------------------------------
    def probe(self) -> None:
        """Sample the primary, then each replica; decide which replicas are in use."""
        p = self._probe_primary()
        for r in self.replicas:
            self._probe_replica(r, p)

    def _probe_primary(self) -> _Probe | None:
        """The primary's WAL position and event position now (None if it cannot be asked)."""
        try:
            if self._primary_at is None and self.slots.forget_beyond(lambda: _current_lsn(self.primary)):
                log.info("cleared write positions past the primary's (another timeline)")
            with self.primary.connect() as conn:
                lsn, ev = conn.exec_driver_sql(_PRIMARY_SQL).one()
            p = _Probe(self._now(), int(lsn), _event_id(ev))
            self.primary_error = None
            with self._lock:
                self._history.append(p)
                while self._history and p.at - self._history[0].at > HISTORY_SECONDS:
                    self._history.popleft()
                self._primary_at = p
        except Exception as e:  # the primary down: keep the replicas' last verdicts
            self.primary_error = f"{type(e).__name__}: {_short(e)}"
            return None
        return p

    def _probe_replica(self, r: Replica, p: _Probe | None) -> None:
        try:
            with r.engine.connect() as conn:
                recovering, replayed, ev = conn.exec_driver_sql(_REPLICA_SQL).one()
        except Exception as e:
            self._leave_out(r, f"unreachable: {type(e).__name__}: {_short(e)}")
            return
        r.probed_at = self._now()
        if not recovering or replayed is None:
            self._leave_out(r, "not a standby in recovery (promoted, or a primary)")
            return
        r.replayed = int(replayed)
        if p is None:  # no primary to compare with: its last verdict stands
            return
        r.lag_seconds = round(self._lag(r.replayed, r.probed_at), 3)
        ev_replica = _event_id(ev)
        r.lag_events = max(0, p.event_id - ev_replica) if p.event_id is not None and ev_replica is not None \
            else None
        was = r.in_use
        r.in_use = r.lag_seconds <= self.max_lag
        r.error = None if r.in_use else f"lagging {r.lag_seconds:.1f}s (over {self.max_lag:g}s)"
        if r.in_use != was:
            log.warning("replica %s %s", r.name, "back in use" if r.in_use else f"left out: {r.error}")

    def _lag(self, replayed: int, now: float) -> float:
        """Seconds since the primary was first seen past `replayed` (0: nothing seen is missing)."""
        with self._lock:
            for p in self._history:
                if p.lsn > replayed:
                    return max(0.0, now - p.at)
        return 0.0

    def _leave_out(self, r: Replica, why: str) -> None:
        if r.in_use:
            log.warning("replica %s left out: %s", r.name, why)
        r.in_use = False
        r.error = why
        r.lag_seconds = r.lag_events = None

    def failed(self, r: Replica, e: BaseException) -> None:
        """A read failed on this replica: left out until the next probe finds it healthy."""
        self.stats["fallbacks"] += 1
        if not isinstance(e, (OperationalError, InterfaceError)):
            return  # the query itself (a schema change not replayed yet, a bad value): stays in use
        if r.in_use:
            log.warning("read on replica %s failed (%s); reading on the primary", r.name, type(e).__name__)
        r.in_use = False
        r.error = f"a read failed: {type(e).__name__}"

    async def run(self) -> None:
        busy: dict[int, asyncio.Future[None]] = {}  # replica -> its probe still running
        while True:
            try:
                p = await self._off_loop(self._probe_primary)
                for i, r in enumerate(self.replicas):
                    if i in busy and not busy[i].done():
                        continue  # still stuck on its last probe: left out already
                    busy[i] = asyncio.ensure_future(self._off_loop(self._probe_replica, r, p))
                    done, _ = await asyncio.wait({busy[i]}, timeout=PROBE_TIMEOUT)
                    if not done:
                        self._leave_out(r, f"not answering within {PROBE_TIMEOUT:g}s")
            except asyncio.CancelledError:
                raise
            except Exception:  # keep probing whatever one round hit
                log.exception("replica probe failed")
            await asyncio.sleep(PROBE_EVERY)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- routing -------------------------------------------------------------------------
    def _best(self) -> Replica | None:
        live = [r for r in self.replicas if r.in_use]
        return min(live, key=lambda r: r.lag_seconds or 0.0) if live else None

    def _route(self, replica: Replica | None, waited: float = 0.0) -> Route:
        self.stats["replica_reads" if replica is not None else "primary_reads"] += 1
        return Route(self.primary, replica, self.failed, waited)

    async def route(self, auth: Any) -> Route:
        """Where this caller's next read runs (see the module docstring)."""
        r = self._best()
        if r is None:
            return self._route(None)
        slots = self.slots.caller_slots(auth)
        need = self.slots.get(slots)
        if need <= 0 or (r.replayed or 0) >= need:
            return self._route(r)
        if any(self._given_up.get(s) == need for s in slots):  # waited once already: until replayed
            return self._route(None)
        started = self._now()
        self.stats["waits"] += 1
        pause = 0.001  # replay usually follows within a millisecond or two: look again soon, then less often
        while self._now() - started < RYW_WAIT:
            try:
                replayed = await asyncio.wait_for(self._off_loop(_replayed, r.engine),
                                                  max(0.01, RYW_WAIT - (self._now() - started)))
            except asyncio.TimeoutError:
                break
            except Exception as e:
                self.failed(r, e)
                return self._route(None)
            r.replayed = max(r.replayed or 0, replayed)
            if replayed >= need:
                return self._route(r, self._now() - started)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)
        if len(self._given_up) > 10_000:
            self._given_up.clear()
        for s in slots:
            self._given_up[s] = need
        return self._route(None, self._now() - started)

    async def wrote(self, auth: Any) -> None:
        """A write by this caller was written through: its reads must see it."""
        try:
            lsn = await asyncio.to_thread(_current_lsn, self.primary)
        except Exception as e:  # the primary is gone: its reads go nowhere better anyway
            log.warning("could not read the primary's WAL position after a write: %s", type(e).__name__)
            return
        self.slots.mark(self.slots.caller_slots(auth), lsn)

    def snapshot(self) -> dict[str, Any]:
        return {"max_lag": self.max_lag, "primary_error": self.primary_error,
                "replicas": [r.snapshot() for r in self.replicas], "reads": dict(self.stats)}

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for r in self.replicas:
            r.engine.dispose()
        self.slots.close()


def _replica_engine(url: str) -> Engine:
    """A pooled engine for a replica: connects fail fast, so a dead replica costs little."""
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT, **TCP_SETTINGS})


def _current_lsn(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").scalar())


def _replayed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(_REPLAY_SQL).scalar() or 0)


def _event_id(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
