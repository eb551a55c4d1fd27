"""Keeping the cache current: one refresh path shared by events, scans and write-through.

Every path ends in `Refresher.apply`: re-read the touched entities from the site
(active, then retired), follow link changes to the other side, and store the result in
one transaction. Rows carry the start time of the fetch that wrote them (`_version`),
so a slow, older fetch never overwrites a newer one whichever path it came from, and
re-applying anything (replay after a crash) is harmless.

`SyncLoop` runs the event watcher and the interval scans while this process holds the
leader lock, serves `sgcache ctrl`, and applies passthrough writes (write-through).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..protocol.values import format_datetime, parse_datetime, utcnow
from ..upstream import Upstream
from .fields import EntityField, MultiEntityField
from .scan import SCAN_OVERLAP, full_scan, return_fields_for
from .service import CacheService
from .store import ACTIVE, Store

log = logging.getLogger("sgcache.sync")

WRITE_METHODS = frozenset({"create", "update", "delete", "revive", "batch"})
Touched = dict[str, set[int]]
#: type -> id -> (record, or None if the site shows it nowhere; active)
Fetched = dict[str, dict[int, tuple[dict[str, Any] | None, bool]]]
#: (type, id) -> what caused the refresh, stored with it in the audit log
Details = dict[tuple[str, int], dict[str, Any]]
#: How long audit log rows are kept.
LOG_RETENTION = dt.timedelta(days=7)
#: How many reads of the site one refresh runs at once.
FETCH_CONCURRENCY = 8
CHUNK = 500
#: Rounds of following changed links to the other side (each entity is fetched once).
MAX_FOLLOW = 4


def now_version() -> int:
    """A fetch's version: microseconds since the epoch, taken before the fetch starts."""
    return time.time_ns() // 1000


def merge(into: Touched, other: Touched) -> Touched:
    for t, ids in other.items():
        into.setdefault(t, set()).update(ids)
    return into


@dataclass
class Applied:
    """What one `apply` stored: counts per outcome, and the entities per type."""

    version: int
    active: int = 0
    retired: int = 0
    gone: int = 0
    entities: Touched = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.active + self.retired + self.gone


class Refresher:
    """Fetch entities from the site and store them; the newest fetch wins per row."""

    def __init__(self, store: Store, upstream: Upstream) -> None:
        self.store = store
        self.upstream = upstream
        self._sem = asyncio.Semaphore(FETCH_CONCURRENCY)
        self.back_types = self._back_types()

    def _back_types(self) -> dict[str, dict[str, set[str]]]:
        """type -> link field -> target types that have a link field explicitly accepting type.

        When such a link changes, the target's inverse list (e.g. Shot.tasks for
        Task.entity) may have changed too, with no write of its own to tell us.
        """
        accepts: dict[str, set[str]] = {}
        for tname, et in self.store.entities.items():
            if tname == "EventLogEntry":
                continue
            for ft in et.fields.values():
                if isinstance(ft, (EntityField, MultiEntityField)):
                    for vt in ft.fs.valid_types or ():
                        accepts.setdefault(vt, set()).add(tname)
        out: dict[str, dict[str, set[str]]] = {}
        for tname, et in self.store.entities.items():
            for fname, ft in et.fields.items():
                if isinstance(ft, (EntityField, MultiEntityField)):
                    targets = {t for t in (ft.fs.valid_types or ()) if tname in accepts.get(t, set())}
                    if targets:
                        out.setdefault(tname, {})[fname] = targets
        return out

    # -- fetch -------------------------------------------------------------------------
    async def _read_ids(self, entity_type: str, ids: list[int], return_only: str,
                        fields: list[str]) -> list[dict[str, Any]]:
        async with self._sem:
            res = await self.upstream.call("read", {
                "type": entity_type, "return_fields": fields,
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "in", "values": ids}]},
                "return_only": return_only,
                "paging": {"entities_per_page": len(ids), "current_page": 1},
                "return_paging_info_without_counts": False})
        return list(res.get("entities") or [])

    async def fetch(self, touched: Touched) -> dict[str, dict[int, tuple[dict[str, Any] | None, bool]]]:
        """type -> id -> (record or None if the site shows it nowhere, active)."""
        out: dict[str, dict[int, tuple[dict[str, Any] | None, bool]]] = {}

        async def one_type(etype: str, ids: list[int]) -> None:
            fields = return_fields_for(self.store, etype)
            got: dict[int, tuple[dict[str, Any] | None, bool]] = {}
            chunks = [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]
            for recs in await asyncio.gather(*(self._read_ids(etype, c, "active", fields) for c in chunks)):
                got.update({r["id"]: (r, True) for r in recs})
            missing = [i for i in ids if i not in got]
            chunks = [missing[i:i + CHUNK] for i in range(0, len(missing), CHUNK)]
            for recs in await asyncio.gather(*(self._read_ids(etype, c, "retired", fields) for c in chunks)):
                got.update({r["id"]: (r, False) for r in recs})
            for i in ids:
                got.setdefault(i, (None, False))
            out[etype] = got

        await asyncio.gather(*(one_type(t, sorted(ids)) for t, ids in touched.items()
                               if t in self.store and ids))
        return out

    async def referencing(self, entity_type: str, ids: Iterable[int]) -> Touched:
        """Entities whose links point at these (for revivals: the site hid those links)."""
        ids = sorted(set(ids))
        out: Touched = {}
        if not ids:
            return out
        jobs = []
        for tname, et in self.store.entities.items():
            for fname, ft in et.fields.items():
                if tname == "EventLogEntry" and fname != "entity":
                    continue  # an event's user/project links are far too many to follow
                if isinstance(ft, (EntityField, MultiEntityField)) and \
                        (not ft.fs.valid_types or entity_type in ft.fs.valid_types):
                    for return_only in ("active", "retired"):
                        jobs.append((tname, fname, return_only))

        async def one(tname: str, fname: str, return_only: str) -> None:
            conds = [{"path": fname, "relation": "is", "values": [{"type": entity_type, "id": i}]} for i in ids]
            async for page in self.upstream.read_pages(
                    tname, ["id"], filters={"logical_operator": "or", "conditions": conds},
                    return_only=return_only):
                out.setdefault(tname, set()).update(r["id"] for r in page)

        async def guarded(job: tuple[str, str, str]) -> None:
            async with self._sem:
                await one(*job)
        await asyncio.gather(*(guarded(j) for j in jobs))
        return out

    # -- links ---------------------------------------------------------------------------
    def _stored_links(self, conn: Connection, etype: str, ids: list[int]) -> dict[int, set[tuple[str, int]]]:
        """The stored link targets (of back-linked fields) of these rows."""
        fields = self.back_types.get(etype, {})
        et = self.store[etype]
        out: dict[int, set[tuple[str, int]]] = {}
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            single = [f for f in fields if isinstance(et.fields[f], EntityField)]
            if single:
                cols = [et.table.c.id] + [et.table.c[c] for f in single for c in (f + "__type", f + "__id")]
                for row in conn.execute(select(*cols).where(self.store.ids_in(et.table.c.id, chunk))):
                    s = out.setdefault(row[0], set())
                    for k in range(len(single)):
                        t, v = row[1 + 2 * k], row[2 + 2 * k]
                        if t is not None and v is not None:
                            s.add((t, v))
            for f in fields:
                if f in et.assoc:
                    a = et.assoc[f]
                    for pid, ct, cid in conn.execute(select(a.c.parent_id, a.c.child_type, a.c.child_id)
                                                     .where(self.store.ids_in(a.c.parent_id, chunk))):
                        out.setdefault(pid, set()).add((ct, cid))
        return out

    def _record_links(self, etype: str, rec: dict[str, Any]) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for f in self.back_types.get(etype, {}):
            v = rec.get(f)
            for link in (v if isinstance(v, list) else [v]):
                if isinstance(link, dict) and link.get("type") and isinstance(link.get("id"), int):
                    out.add((link["type"], link["id"]))
        return out

    def _other_side(self, frontier: dict[str, dict[int, tuple[dict[str, Any] | None, bool]]],
                    fetched: dict[str, dict[int, tuple[dict[str, Any] | None, bool]]]) -> Touched:
        """Targets (not fetched yet) whose links were added or removed by the frontier's records."""
        out: Touched = {}
        with self.store.engine.connect() as conn:
            for etype, got in frontier.items():
                if etype not in self.back_types:
                    continue
                old = self._stored_links(conn, etype, sorted(got))
                for eid, (rec, _active) in got.items():
                    new = self._record_links(etype, rec) if rec else set()
                    for t, i in new ^ old.get(eid, set()):
                        if t in self.store and not (t in fetched and i in fetched[t]):
                            out.setdefault(t, set()).add(i)
        return out

    # -- apply ---------------------------------------------------------------------------
    async def apply(self, touched: Touched, *, source: str, ref: str = "", follow: bool = True,
                    prefetched: Fetched | None = None, version: int | None = None,
                    event_id: int | None = None, extra: dict[str, list[dict[str, Any]]] | None = None,
                    in_txn: Callable[[Connection], None] | None = None,
                    details: Details | None = None) -> Applied:
        """Re-read `touched` (plus `prefetched` records) and store everything in one transaction.

        `follow` also refreshes the other side of changed links; `extra` are records
        stored as they are (e.g. the EventLogEntry rows themselves); `in_txn` runs in the
        same transaction (the event watcher saves its position there).
        """
        version = version or now_version()
        fetched = await self.prepare(touched, follow=follow, prefetched=prefetched)
        return await self.commit(fetched, version, source=source, ref=ref, event_id=event_id,
                                 extra=extra, in_txn=in_txn, details=details)

    async def prepare(self, touched: Touched, *, follow: bool = True,
                      prefetched: Fetched | None = None) -> Fetched:
        """The fetch half of `apply` (take the version before calling it)."""
        fetched = dict(prefetched or {})
        todo = {t: {i for i in ids if not (t in fetched and i in fetched[t])} for t, ids in touched.items()}
        for t, got in (await self.fetch(todo)).items():
            fetched[t] = {**fetched.get(t, {}), **got}
        frontier = fetched
        for _ in range(MAX_FOLLOW if follow else 0):
            # Entities fetched because a link changed may have changed links of their own.
            other = await asyncio.to_thread(self._other_side, frontier, fetched)
            if not other:
                break
            frontier = await self.fetch(other)
            for t, got in frontier.items():
                fetched[t] = {**fetched.get(t, {}), **got}
        return fetched

    async def commit(self, fetched: Fetched, version: int, *, source: str, ref: str = "",
                     event_id: int | None = None, extra: dict[str, list[dict[str, Any]]] | None = None,
                     in_txn: Callable[[Connection], None] | None = None,
                     details: Details | None = None) -> Applied:
        """The write half of `apply`: one transaction."""
        applied = Applied(version)
        await asyncio.to_thread(self._write, fetched, applied, source, ref, event_id, extra, in_txn, details or {})
        return applied

    def _write(self, fetched: dict[str, dict[int, tuple[dict[str, Any] | None, bool]]], applied: Applied,
               source: str, ref: str, event_id: int | None, extra: dict[str, list[dict[str, Any]]] | None,
               in_txn: Callable[[Connection], None] | None, details: Details) -> None:
        now = format_datetime(utcnow())
        log_rows: list[dict[str, Any]] = []
        with self.store.engine.begin() as conn:
            # Types and rows in one fixed order, so that concurrent writers (the leader and
            # write-through in any server) lock rows in the same order and cannot deadlock.
            for etype, got in sorted(fetched.items()):
                if etype not in self.store:
                    continue
                for active in (True, False):
                    recs = [r for _, (r, a) in sorted(got.items()) if r is not None and a is active]
                    if recs:
                        self.store.upsert(conn, etype, recs, active=active, version=applied.version,
                                          event_id=event_id)
                gone = [i for i, (r, _) in got.items() if r is None]
                if gone:
                    self.store.delete_rows(conn, etype, gone, applied.version)
                for eid, (rec, active) in got.items():
                    outcome = "gone" if rec is None else "active" if active else "retired"
                    setattr(applied, outcome, getattr(applied, outcome) + 1)
                    applied.entities.setdefault(etype, set()).add(eid)
                    log_rows.append({"at": now, "source": source, "ref": ref[:64], "entity_type": etype,
                                     "entity_id": eid, "outcome": outcome,
                                     "detail": json.dumps(details[(etype, eid)]) if (etype, eid) in details else None})
            for etype, recs in (extra or {}).items():
                if etype in self.store and recs:
                    self.store.upsert(conn, etype, recs, active=True, version=applied.version)
            self.store.insert_rows(conn, self.store.log_table, log_rows)
            if in_txn is not None:
                in_txn(conn)


# -- interval scans ---------------------------------------------------------------------------

class Scanner:
    """Interval scans through the versioned refresh path, including retired-set comparison.

    `updated_at` catches writes by scripts with events turned off; their retirements may
    not move `updated_at`, so each scan also compares the site's retired ids with ours.
    """

    def __init__(self, store: Store, upstream: Upstream, refresher: Refresher, page_size: int = 500) -> None:
        self.store = store
        self.upstream = upstream
        self.refresher = refresher
        self.page_size = page_size

    def _state(self, key: str) -> Any:
        with self.store.engine.connect() as conn:
            return self.store.get_state(conn, key)

    async def interval(self) -> dict[str, int]:
        started = utcnow()
        t0 = time.monotonic()
        since_text = await asyncio.to_thread(self._state, "scan_since")
        if since_text is None:
            await full_scan(self.upstream, self.store, page_size=self.page_size)
            return {}
        since = parse_datetime(since_text)
        assert since is not None
        cutoff = format_datetime(since - SCAN_OVERLAP)
        rows: dict[str, int] = {}
        for etype in self.store.entities:
            if etype == "EventLogEntry":
                continue
            n = 0
            if "updated_at" in self.store[etype].fields:
                n += await self._changed_since(etype, cutoff)
            n += await self._reconcile_retired(etype)
            if n:
                rows[etype] = n
        seconds = time.monotonic() - t0

        def record(conn: Connection) -> None:
            lt = self.store.log_table
            conn.execute(lt.delete().where(lt.c.at < format_datetime(started - LOG_RETENTION)))
            self.store.set_state(conn, "scan_since", format_datetime(started))
            self.store.set_state(conn, "last_interval_scan", {
                "started_at": format_datetime(started), "seconds": round(seconds, 3), "rows": rows})
        await asyncio.to_thread(self._in_txn, record)
        log.info("interval scan: %d rows in %.1fs", sum(rows.values()), seconds)
        return rows

    def _in_txn(self, fn: Callable[[Connection], None]) -> None:
        with self.store.engine.begin() as conn:
            fn(conn)

    async def _changed_since(self, etype: str, cutoff: str) -> int:
        fields = return_fields_for(self.store, etype)
        f = {"logical_operator": "and", "conditions": [
            {"path": "updated_at", "relation": "greater_than", "values": [cutoff]}]}
        n = 0
        for return_only, active in (("active", True), ("retired", False)):
            version = now_version()
            async for page in self.upstream.read_pages(etype, fields, filters=f, return_only=return_only,
                                                       page_size=self.page_size):
                pre = {etype: {r["id"]: (r, active) for r in page}}
                await self.refresher.apply({}, source="scan", ref="interval", prefetched=pre, version=version)
                n += len(page)
                version = now_version()
        return n

    async def _reconcile_retired(self, etype: str) -> int:
        """Refresh ids whose retired state differs between the site and the cache."""
        site: set[int] = set()
        async for page in self.upstream.read_pages(etype, ["id"], return_only="retired", page_size=self.page_size):
            site.update(r["id"] for r in page)

        def ours() -> set[int]:
            t = self.store[etype].table
            with self.store.engine.connect() as conn:
                return set(conn.execute(select(t.c.id).where(t.c[ACTIVE] == False)).scalars())  # noqa: E712
        cached = await asyncio.to_thread(ours)
        differ = site ^ cached
        if not differ:
            return 0
        revived = cached - site
        touched: Touched = {etype: differ}
        if revived:
            merge(touched, await self.refresher.referencing(etype, revived))
        applied = await self.refresher.apply(touched, source="scan", ref="retired-set")
        log.info("scan: %s retired set differed for %d ids (%d revived or gone)", etype, len(differ), len(revived))
        return applied.total


# -- the loop -----------------------------------------------------------------------------------

class SyncLoop:
    """Background sync (events, scans, schema checks) plus write-through for the server."""

    def __init__(self, service: CacheService, *, leader: Any = None) -> None:
        self.svc = service
        self.store = service.store
        self.upstream = service.upstream
        self.config = service.config
        self.refresher = Refresher(self.store, self.upstream)
        self.scanner = Scanner(self.store, self.upstream, self.refresher, page_size=self.config.page_size)
        from .events import EventWatcher
        self.watcher = EventWatcher(self.store, self.upstream, self.refresher, self.config)
        from .schema_sync import generation, reader_for
        self._generation = generation(self.store)
        service.reader = reader_for(self.store)  # fields still being backfilled pass through
        self._leader = leader
        self._wake = asyncio.Event()
        self._poll_waiters: list[asyncio.Future[dict[str, Any]]] = []
        self._scan_requested = False
        self.last_scan: float | None = None
        self.is_leader = False
        self.stats: dict[str, Any] = {"polls": 0, "events": 0, "scans": 0, "errors": 0, "writes": 0}

    # -- control ---------------------------------------------------------------------------
    async def request_poll(self) -> dict[str, Any]:
        """Make the watcher poll now; resolves once it has caught up with the log."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._poll_waiters.append(fut)
        self._wake.set()
        return await fut

    async def request_scan(self) -> dict[str, Any]:
        self._scan_requested = True
        return await self.request_poll()

    def status(self) -> dict[str, Any]:
        return {"leader": self.is_leader, "pid": os.getpid(), "schema_generation": self._generation,
                "last_event_id": self.watcher.last_id,
                "backlog": len(self.watcher.backlog), "last_scan": self.last_scan,
                "stats": dict(self.stats, **self.watcher.stats)}

    # -- background loop ---------------------------------------------------------------------
    async def run(self) -> None:
        """Wait for leadership, then poll events and scan until cancelled."""
        from .control import ControlServer
        from .leader import leader_lock
        lock = self._leader or leader_lock(self.config, self.store.engine)
        control = ControlServer(self.config, self)
        try:
            while True:
                if not await lock.acquire():
                    await self._follow_schema()
                    await asyncio.sleep(lock.retry_seconds)
                    continue
                self.is_leader = True
                log.info("this process is the sync leader")
                await control.start()
                try:
                    await self._lead(lock)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # e.g. the site is down while taking over: try again
                    self.stats["errors"] += 1
                    log.warning("sync leader start failed: %s", e, exc_info=not isinstance(e, errors.Fault))
                    await asyncio.sleep(min(self.config.poll_interval, 2.0))
                finally:
                    self.is_leader = False
                    await control.stop()
        finally:
            await control.stop()
            lock.release()
            for fut in self._poll_waiters:
                if not fut.done():
                    fut.cancel()

    async def _lead(self, lock: Any) -> None:
        await self._follow_schema()
        await self._schema_sync().resume()
        await self.watcher.start()
        next_scan = time.monotonic() + self.config.scan_interval
        while True:
            waiters, self._poll_waiters = self._poll_waiters, []
            result: dict[str, Any] = {}
            try:
                if not await lock.still_held():
                    log.warning("lost the leader lock; stepping down")
                    for fut in waiters:
                        if not fut.done():
                            fut.set_result({"leader": False})
                    return
                scan_due = self._scan_requested or time.monotonic() >= next_scan
                if scan_due or self.watcher.schema_changed:
                    self.watcher.schema_changed = False
                    new_store = await self._schema_sync().check()  # DisplayColumn event, or periodic
                    if new_store is not None:
                        result["schema"] = "changed"
                    await self._follow_schema()
                if scan_due:
                    self._scan_requested = False
                    result["scan"] = await self.scanner.interval()
                    await self.watcher.check_retention()
                    self.last_scan = time.time()
                    self.stats["scans"] += 1
                    next_scan = time.monotonic() + self.config.scan_interval
                n = await self.watcher.catch_up()
                if self.watcher.schema_changed:  # apply it before answering a poll
                    self.watcher.schema_changed = False
                    if await self._schema_sync().check() is not None:
                        result["schema"] = "changed"
                    await self._follow_schema()
                self.stats["polls"] += 1
                result.update(self.status(), applied_events=n)
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(result)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep syncing whatever one pass hit
                self.stats["errors"] += 1
                log.warning("sync pass failed: %s", e, exc_info=not isinstance(e, errors.Fault))
                self._poll_waiters = waiters + self._poll_waiters  # retried on the next pass
                await asyncio.sleep(min(self.config.poll_interval, 2.0))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval)
            self._wake.clear()

    # -- schema ----------------------------------------------------------------------------
    def _schema_sync(self) -> Any:
        from .schema_sync import SchemaSync
        return SchemaSync(self.store, self.upstream, self.config)

    async def _follow_schema(self) -> None:
        """Rebuild the Store and ReadEngine when any process recorded a schema change."""
        from .schema_sync import generation, reader_for, reload_store
        gen = await asyncio.to_thread(generation, self.store)
        if gen == self._generation:
            return
        store = await asyncio.to_thread(reload_store, self.store.engine)
        if store is None:
            return
        reader = await asyncio.to_thread(reader_for, store)
        self._generation = gen
        self.store = self.svc.store = store
        self.svc.reader = reader
        self.refresher = Refresher(store, self.upstream)
        self.scanner = Scanner(store, self.upstream, self.refresher, page_size=self.config.page_size)
        self.watcher.rebind(store, self.refresher)
        log.info("schema generation %d: %d types", gen, len(store.entities))

    # -- refresh ---------------------------------------------------------------------------
    async def refresh(self, entity_type: str, ids: Iterable[int], *, source: str = "write",
                      ref: str = "") -> Applied:
        """Re-read entities from the site (whatever their state) and store them."""
        return await self.refresher.apply({entity_type: {int(i) for i in ids}}, source=source, ref=ref)

    # -- write-through ---------------------------------------------------------------------
    async def on_write(self, method: str, params: list[Any], body: bytes) -> None:
        """Apply the result of a passthrough write before the caller's response returns.

        Written entities are re-read, and so are the other sides of links they gained
        or lost (Shot.tasks when a Task's entity changes). Never fails the request.
        """
        if method not in WRITE_METHODS:
            return
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or data.get("exception"):
                return
            results = data.get("results")
            req = params[1] if len(params) > 1 else None
            items = list(zip(req, results)) if method == "batch" and isinstance(req, list) \
                and isinstance(results, list) else [(dict(req or {}, request_type=method), results)]
            touched: Touched = {}
            spawned: list[tuple[str, int]] = []
            revived: Touched = {}
            written: Details = {}
            for item, result in items:
                if not isinstance(item, dict):
                    continue
                kind = item.get("request_type", method)
                etype = item.get("type")
                eid = item.get("id")
                if kind == "create" and isinstance(result, list) and result:
                    result = result[0]
                if kind == "create" and isinstance(result, dict):
                    etype, eid = result.get("type", etype), result.get("id")
                    if any(f.get("field_name") == "task_template" and f.get("value")
                           for f in item.get("fields") or [] if isinstance(f, dict)):
                        spawned.append((etype, eid))
                if isinstance(etype, str) and isinstance(eid, int) and etype in self.store:
                    touched.setdefault(etype, set()).add(eid)
                    written[(etype, eid)] = {"request": kind, "fields": sorted(
                        f.get("field_name") for f in item.get("fields") or [] if isinstance(f, dict)
                        and isinstance(f.get("field_name"), str))}
                    if kind == "revive" and result is True:
                        revived.setdefault(etype, set()).add(eid)
            for etype, ids in revived.items():
                merge(touched, await self.refresher.referencing(etype, ids))
            for etype, eid in spawned:
                merge(touched, await self._spawned_tasks(etype, eid))
            if touched:
                await self.refresher.apply(touched, source="write", ref=method, details=written)
                self.stats["writes"] += 1
        except errors.Fault as e:
            log.warning("write-through of %s could not re-read from the site: %s", method, e.message)
        except Exception:
            log.exception("write-through of %s failed", method)

    async def _spawned_tasks(self, entity_type: str, entity_id: int) -> Touched:
        """A task template spawns Tasks on the site; bring them in with their parent."""
        if "Task" not in self.store or "entity" not in self.store["Task"].fields:
            return {}
        ids: set[int] = set()
        async for page in self.upstream.read_pages("Task", ["id"], filters={
                "logical_operator": "and", "conditions": [
                    {"path": "entity", "relation": "is", "values": [{"type": entity_type, "id": entity_id}]}]}):
            ids.update(r["id"] for r in page)
        return {"Task": ids}


def scan_started_before(started_at: str | None, overlap: dt.timedelta = SCAN_OVERLAP) -> str | None:
    """The wire time `overlap` before a recorded scan start (where replay must begin)."""
    if not started_at:
        return None
    t = parse_datetime(started_at)
    return format_datetime(t - overlap) if t else None
