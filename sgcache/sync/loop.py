"""The sync loop: events, interval scans and schema checks in the leader; write-through everywhere.

`SyncLoop` runs the event watcher and the interval scans while this process holds the
leader lock, serves `sgcache ctrl`, and applies passthrough writes (write-through) in
every process, before the caller's response returns, so callers read their own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any, AsyncIterator, Iterable

from ..protocol import errors
from ..read.engine import reader_for
from ..runtime import CacheService
from .events import EventWatcher
from .interval_scan import Scanner
from .refresh import WRITE_METHODS, Applied, Details, Refresher, Touched, merge
from .schema_changes import SchemaSync, reload_store

log = logging.getLogger("sgcache.sync")


class CountedUpstream:
    """The site client as the event watcher uses it, counting its requests (for the pacer)."""

    def __init__(self, upstream: Any) -> None:
        self._upstream = upstream
        self.requests = 0

    async def call(self, *args: Any, **kw: Any) -> Any:
        self.requests += 1
        return await self._upstream.call(*args, **kw)

    async def read_pages(self, *args: Any, **kw: Any) -> AsyncIterator[list[dict[str, Any]]]:
        self.requests += 1
        async for page in self._upstream.read_pages(*args, **kw):
            yield page
            self.requests += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)


class PollPacer:
    """How long the watcher waits before its next poll: freshness within a request budget.

    A poll costs one read of the log when nothing happened, and more when its events name
    entities to re-read. The watcher polls every `poll_interval` (0.5 s) unless the
    recent average cost of a poll would then exceed `poll_budget` requests per second;
    then the cycle stretches to cost / budget. The average spreads an edit's extra reads
    over the following cycles instead of one long pause after it (which would set the
    worst lag); a token bucket (`budget` a second, no savings: quiet cycles cost what
    they earn) settles what the average misses, so from any point on the site sees at
    most `budget` requests a second plus one pass. A site so busy that this passes
    MAX_CYCLE is polled every MAX_CYCLE: freshness then wins over the budget.
    """

    ALPHA = 0.2  # weight of the latest poll's cost in the average
    MAX_CYCLE = 5.0
    SAVINGS = 0.0  # seconds of unspent budget kept for later bursts

    def __init__(self, budget: float, interval: float) -> None:
        self.budget = budget
        self.interval = interval
        self.cost = 1.0
        self.tokens = 0.0
        self._at: float | None = None

    def wait(self, requests: int, busy: float, now: float | None = None) -> float:
        """Seconds to wait after a pass that sent `requests` and took `busy` seconds."""
        if self.budget <= 0:
            return self.interval
        now = time.monotonic() if now is None else now
        if self._at is not None:
            self.tokens = min(self.budget * self.SAVINGS, self.tokens + self.budget * (now - self._at))
        self._at = now
        self.tokens -= requests
        self.cost += self.ALPHA * (max(requests, 1) - self.cost)
        cycle = max(self.interval, self.cost / self.budget)
        debt = -self.tokens / self.budget  # until the bucket is back at zero
        return min(max(0.0, cycle - busy, debt), self.MAX_CYCLE)


class SyncLoop:
    """Background sync (events, scans, schema checks) plus write-through for the server."""

    def __init__(self, service: CacheService, *, leader: Any = None) -> None:
        self.svc = service
        self.store = service.store
        self.upstream = service.upstream
        self.config = service.config
        self.refresher = Refresher(self.store, self.upstream)
        self.scanner = Scanner(self.store, self.upstream, self.refresher, page_size=self.config.page_size)
        #: the watcher's own client and refresher, so the pacer counts only its requests
        self.watch_upstream = CountedUpstream(self.upstream)
        self.watcher = EventWatcher(self.store, self.watch_upstream,  # type: ignore[arg-type]
                                    Refresher(self.store, self.watch_upstream),  # type: ignore[arg-type]
                                    self.config)
        self.pacer = PollPacer(self.config.poll_budget, self.config.poll_interval)
        self._generation = self.store.schema_generation()
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
                "stats": dict(self.stats, **self.watcher.stats, watcher_requests=self.watch_upstream.requests)}

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
            started, sent = time.monotonic(), self.watch_upstream.requests
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
            wait = self.pacer.wait(self.watch_upstream.requests - sent, time.monotonic() - started)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    # -- schema ----------------------------------------------------------------------------
    def _schema_sync(self) -> Any:
        return SchemaSync(self.store, self.upstream, self.config)

    async def _follow_schema(self) -> None:
        """Rebuild the Store and ReadEngine when any process recorded a schema change."""
        gen = await asyncio.to_thread(self.store.schema_generation)
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
        self.watcher.rebind(store, Refresher(store, self.watch_upstream))  # type: ignore[arg-type]
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
