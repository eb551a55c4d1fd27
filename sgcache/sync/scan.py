"""Full scans: load every active and retired entity of each cached type from the site.

Why this shape: a large site holds tens of millions of rows and a hosted site takes
100-500 ms a page, so reading one page at a time, one type after another, takes hours,
and a scan killed at 90% used to start again from zero.

- **Plan.** Each type is cut into segments: equal slices of its id span (the site's
  `summarize` gives the count and the largest id) for the active rows, the last slice
  open-ended so rows created meanwhile land in it, and one segment of retired rows.
  Types are planned while the ones planned already are fetched: against a hosted site
  the summaries of a few dozen types take seconds.
- **Fetch.** `concurrency` + 1 fetchers take segments, biggest planned types first, and
  page through each by id (keyset: `id > cursor`). Every site request of the scan,
  summaries included, holds one of `concurrency` slots while it is with the site: at
  most that many are in flight. A slot is released when the answer has arrived, before
  it is decoded, and the spare fetcher waits on a slot with its next request, so a slot
  freed by a response is taken at once instead of after its fetcher has decoded and
  queued the page (~5 ms of every ~190 ms page against a hosted site). Pages
  are the site's `api_max_entities_per_page` (from `info`), decoded by our own codec
  (`Upstream.call`).
- **Write.** Pages go through a bounded queue to one writer, which upserts them in bulk
  with the fetch's start time as the row version (a page never overwrites a row a later
  fetch wrote) and, in the same transaction, records each segment's cursor
  (`_sgcache_state["scan:<kind>:<type>"]`). Memory is bounded by the pages in flight
  and the queue, whatever the size of the site. A full scan into an empty table drops
  its secondary indexes and, once the type's last page is committed, builds them (one
  sort instead of an index insert per row per index) one index per transaction, between
  page writes or while the writer is idle: a fetcher waiting on the writer waits for one
  index, not a whole type's (seconds on a big type, with every fetcher stalled behind
  it). On PostgreSQL they are built on a connection of their own while pages go on
  being committed (an index build locks only its own, finished, table). The scan ends
  once they are built; the type is not served before, and a
  discarded interrupted scan builds what it left out.
- **Resume.** A killed scan, run again, reads the cursors and continues after the last
  committed page of each segment: only pages fetched but not committed are read twice
  (at most two per fetcher: the one in flight and the one waiting to be written).
  Indexes of a type completed before the kill are built by the resumed run.
  It keeps the first run's start time, which is where the event watcher and the interval
  scans start from, so whatever changed on the site below a cursor between the runs is
  replayed like a change during one long uninterrupted scan. Types are primed (served
  locally) only once every segment of every scanned type has completed.

Interval scans (what changed since) are `interval_scan.Scanner`'s: they go through the
versioned refresh path.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from sqlalchemy import Index, delete, select
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..protocol.values import format_datetime, parse_datetime, utcnow
from ..store.tables import Store
from ..upstream import Upstream, UpstreamUnavailable
from .scan_plan import PAGES_PER_SEGMENT, Segment, TypePlan, fields_sig, run_key, split, type_key

log = logging.getLogger("sgcache.scan")

#: Re-read this much before the last scan's start, to absorb clock skew and slow commits.
SCAN_OVERLAP = dt.timedelta(seconds=60)
#: Site requests in flight during a full scan unless told otherwise (SGCACHE_SCAN_CONCURRENCY).
DEFAULT_CONCURRENCY = 4
#: Fetchers beyond the concurrency: one waits on a slot while the others turn a page around.
SPARE_FETCHERS = 1
#: Page size when the site's `info` does not say.
DEFAULT_PAGE_SIZE = 500
Progress = Callable[[str, int], None]
#: Told once per type before any page: (type, rows the site counts or None, rows already
#: loaded by an earlier run of this scan, resumed?).
Planned = Callable[[str, int | None, int, bool], None]
#: Runs in the writer's transaction when a type's last segment completes (rebuild's sweep).
TypeDone = Callable[[Connection, "TypePlan"], None]


@dataclass
class ScanResult:
    kind: str
    started_at: str
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    #: rows per type loaded by earlier, interrupted runs of the same scan
    resumed: dict[str, int] = field(default_factory=dict)


def return_fields_for(store: Store, entity_type: str) -> list[str]:
    return ["id", *store[entity_type].fields]


def _project_filter(store: Store, entity_type: str, projects: list[int] | None) -> dict[str, Any] | None:
    if not projects:
        return None
    if entity_type == "Project":
        return {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "in", "values": projects}]}
    if "project" not in store[entity_type].fields:
        return None
    return {"logical_operator": "and", "conditions": [
        {"path": "project", "relation": "in", "values": [{"type": "Project", "id": p} for p in projects]}]}


# -- the scan --------------------------------------------------------------------------------

@dataclass
class _Page:
    plan: TypePlan
    seg: Segment
    ents: list[dict[str, Any]]
    version: int
    cursor: int
    last: bool
    committed: asyncio.Event = field(default_factory=asyncio.Event)


class ParallelScan:
    """Plan, fetch and write one full scan (or rebuild) of some types; resumable."""

    def __init__(self, upstream: Upstream, store: Store, kind: str, *, concurrency: int = DEFAULT_CONCURRENCY,
                 page_size: int | None = None, progress: Progress | None = None,
                 planned: Planned | None = None, type_done: TypeDone | None = None) -> None:
        self.upstream = upstream
        self.store = store
        self.kind = kind
        self.concurrency = max(1, int(concurrency))
        self.requested_page_size = page_size
        self.page_size = page_size or DEFAULT_PAGE_SIZE
        self.progress = progress
        self.planned = planned
        self.type_done = type_done
        self.plans: dict[str, TypePlan] = {}
        self.filters: dict[str, dict[str, Any] | None] = {}
        self.fields: dict[str, list[str]] = {}
        self.started_at = utcnow()
        self.resumed = False
        self.requests = 0
        #: types to plan (`run` plans them while fetching the planned ones)
        self.fresh: list[str] = []
        #: site requests in flight, summaries and pages alike
        self._slots = asyncio.Semaphore(self.concurrency)
        self.fetchers = self.concurrency + SPARE_FETCHERS
        #: secondary indexes to build, of types whose last page is committed (writer only)
        self._unindexed: collections.deque[Index] = collections.deque()

    # -- planning ------------------------------------------------------------------------
    async def prepare(self, types: list[str], projects: list[int] | None, resume: bool) -> None:
        """Load the committed plan of an interrupted run (if `resume` and it matches) and
        record the run; the types without a plan are planned by `run`."""
        info = await self.upstream.call("info")
        site_max = info.get("api_max_entities_per_page") if isinstance(info, dict) else None
        if isinstance(site_max, int) and site_max > 0:
            self.page_size = min(self.requested_page_size or site_max, site_max)
        for etype in types:
            self.filters[etype] = _project_filter(self.store, etype, projects)
            self.fields[etype] = return_fields_for(self.store, etype)
        saved, old = await asyncio.to_thread(self._load_saved, projects, resume)
        if saved is not None:
            self.started_at = parse_datetime(saved["started_at"]) or self.started_at
        for etype in types:
            v = old.get(etype)
            sig = fields_sig(self.fields[etype], self.filters[etype])
            if v is not None and v.get("fields") == sig:
                self.plans[etype] = TypePlan.from_json(etype, v)
            else:
                self.fresh.append(etype)
        self.resumed = bool(self.plans)
        if self.resumed:
            done = [t for t, p in self.plans.items() if p.done]
            log.info("resuming the %s scan started at %s: %d rows already loaded; %s; %s", self.kind,
                     format_datetime(self.started_at), sum(p.rows for p in self.plans.values()),
                     f"complete: {', '.join(done)}" if done else "no type complete yet",
                     f"continuing {', '.join(t for t in self.plans if t not in done)}"
                     if len(done) < len(self.plans) else "nothing left to read in them")
        if saved is None:
            await asyncio.to_thread(self._save_run, projects)
        for etype in sorted(self.plans, key=lambda t: -(self.plans[t].total or 0)):
            p = self.plans[etype]
            if self.planned:
                self.planned(etype, p.total, p.earlier, True)

    def _save_run(self, projects: list[int] | None) -> None:
        with self.store.engine.begin() as conn:
            self.store.set_state(conn, run_key(self.kind), {
                "started_at": format_datetime(self.started_at),
                "projects": sorted(projects) if projects else None})

    def _load_saved(self, projects: list[int] | None,
                    resume: bool) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        st = self.store.state_table
        prefix = type_key(self.kind, "")
        with self.store.engine.begin() as conn:
            run = self.store.get_state(conn, run_key(self.kind))
            if run is not None and resume and run.get("projects") == (sorted(projects) if projects else None):
                old = {k[len(prefix):]: self.store.get_state(conn, k) for k in conn.execute(
                    select(st.c.key).where(st.c.key.startswith(prefix, autoescape=True))).scalars()}
                return run, {t: v for t, v in old.items() if isinstance(v, dict)}
            if run is not None:
                why = "asked to start afresh" if not resume else "it was for other projects"
                log.info("discarding the interrupted %s scan started at %s (%s)", self.kind, run.get("started_at"), why)
            for key in conn.execute(select(st.c.key).where(st.c.key.startswith(prefix, autoescape=True))).scalars():
                if key[len(prefix):] in self.store:  # indexes it deferred and never built
                    self.store.ensure_indexes(conn, key[len(prefix):])
            conn.execute(delete(st).where(st.c.key.startswith(prefix, autoescape=True)))
            conn.execute(delete(st).where(st.c.key == run_key(self.kind)))
        return None, {}

    async def _summary(self, etype: str, kind: str) -> Any:
        res = await self.upstream.call("summarize", {
            "type": etype, "filters": self.filters[etype] or {"logical_operator": "and", "conditions": []},
            "summaries": [{"field": "id", "type": kind}]}, slot=self._slots)
        return ((res or {}).get("summaries") or {}).get("id")

    async def _plan(self, etype: str, version: int) -> TypePlan:
        total: int | None = None
        max_id: int | None = None
        try:
            total = int(await self._summary(etype, "record_count") or 0)
            if total >= 2 * self.page_size * PAGES_PER_SEGMENT:
                max_id = int(await self._summary(etype, "maximum") or 0)
        except (errors.AuthenticationFault, UpstreamUnavailable):
            raise
        except (errors.Fault, TypeError, ValueError):  # a site that cannot say: one range, no total
            log.info("%s: the site gave no count; scanning it as one range", etype)
        segs = [Segment("active", lo, hi, lo) for lo, hi in split(total or 0, max_id, self.page_size,
                                                                   self.concurrency)]
        segs.append(Segment("retired", 0, None, 0))
        return TypePlan(etype, segs, fields_sig(self.fields[etype], self.filters[etype]), version, total)

    def _save_plan(self, plan: TypePlan) -> None:
        """Commit a new plan; a full scan of an empty table drops its indexes (built when
        the type completes: once, from the loaded table, instead of row by row)."""
        with self.store.engine.begin() as conn:
            if self.kind == "full":
                if self.store.is_empty(conn, plan.etype):
                    self.store.drop_indexes(conn, plan.etype)
                    self.store.drop_orphan_links(conn, plan.etype)  # new rows' lists then go in as they come
                    plan.deferred = True
                else:  # an earlier run of another shape may have deferred them
                    self.store.ensure_indexes(conn, plan.etype)
            self.store.set_states(conn, {type_key(self.kind, plan.etype): plan.to_json()})

    def forget(self, conn: Connection) -> None:
        """Drop the committed plan of these types (and the run, once none is left): call it
        in the transaction that records the scan as done."""
        st = self.store.state_table
        conn.execute(delete(st).where(st.c.key.in_([type_key(self.kind, t) for t in self.plans])))
        left = conn.execute(select(st.c.key).where(
            st.c.key.startswith(type_key(self.kind, ""), autoescape=True)).limit(1)).first()
        if left is None:
            conn.execute(delete(st).where(st.c.key == run_key(self.kind)))

    # -- fetch and write --------------------------------------------------------------------
    async def run(self) -> None:
        """Plan the types not planned yet and read every segment not done, writing every
        page; raises the first failure."""
        # Segments to read, biggest types first: (-total, order, plan, segment). Once every
        # type is planned, one (1, ...) per fetcher, after all of them: no more work.
        todo: asyncio.PriorityQueue[tuple[int, int, TypePlan | None, Segment | None]] = asyncio.PriorityQueue()
        order = itertools.count()

        def add(p: TypePlan) -> None:
            for seg in p.segments:
                if not seg.done:
                    todo.put_nowait((-(p.total or 0), next(order), p, seg))
        for p in self.plans.values():
            add(p)
            if p.done and p.deferred:  # completed, maybe not indexed, before a kill
                self._unindexed.extend(self.store.indexes(p.etype))
            if p.done and self.type_done is not None:  # completed just before a kill: redo the hook
                await asyncio.to_thread(self._in_txn, lambda conn, p=p: self.type_done(conn, p))  # type: ignore[misc]
        if todo.empty() and not self.fresh and not self._unindexed:
            return
        queue: asyncio.Queue[_Page | None] = asyncio.Queue(maxsize=self.fetchers)

        async def plan_all(writer: concurrent.futures.Executor) -> None:
            loop = asyncio.get_running_loop()

            async def plan_one(etype: str) -> None:
                plan = await self._plan(etype, await asyncio.to_thread(self.store.now_version))
                await loop.run_in_executor(writer, self._save_plan, plan)  # after the writer's pending pages
                self.plans[etype] = plan
                if self.planned:
                    self.planned(etype, plan.total, 0, False)
                add(plan)
            await _gather(*(plan_one(t) for t in self.fresh))
            for _ in range(self.fetchers):
                todo.put_nowait((1, next(order), None, None))

        async def next_segment() -> tuple[TypePlan, Segment] | None:
            _, _, p, seg = await todo.get()
            return None if p is None or seg is None else (p, seg)

        async def fetchers(writer: concurrent.futures.Executor) -> None:
            await _gather(plan_all(writer), *(self._fetcher(next_segment, queue) for _ in range(self.fetchers)))
            await queue.put(None)
        # One thread writes every page: rows are built and freed in one malloc arena (the
        # default pool's threads each grew their own) on one connection.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sgcache-scan-writer") as writer:
            if self.store.dialect == "postgresql":
                more, done = asyncio.Event(), asyncio.Event()
                await _gather(fetchers(writer), self._writer(queue, writer, (more, done)), self._index_aside(more, done))
            else:
                await _gather(fetchers(writer), self._writer(queue, writer))

    async def _fetcher(self, next_segment: Callable[[], Awaitable[tuple[TypePlan, Segment] | None]],
                       queue: asyncio.Queue[_Page | None]) -> None:
        prev: _Page | None = None
        while (got := await next_segment()) is not None:
            prev = await self._page_through(*got, queue, prev)

    async def _page_through(self, plan: TypePlan, seg: Segment, queue: asyncio.Queue[_Page | None],
                            prev: _Page | None) -> _Page | None:
        """Page through one segment. A fetcher holds at most two pages its writer has not
        committed (the one it reads and the one before), so a kill costs at most those."""
        etype = plan.etype
        base = self.filters[etype]
        cursor = seg.cursor
        while True:
            conds: list[dict[str, Any]] = [{"path": "id", "relation": "greater_than", "values": [cursor]}]
            if seg.hi is not None:
                conds.append({"path": "id", "relation": "less_than", "values": [seg.hi + 1]})
            if base:
                conds.append(base)
            # The fetch's start (a PostgreSQL round trip; SQLite's is this host's clock, read here:
            # a thread hop per page delayed the next request behind the writer's hold on the GIL).
            version = self.store.now_version() if self.store.dialect == "sqlite" else \
                await asyncio.to_thread(self.store.now_version)
            res = await self.upstream.call("read", {
                "type": etype, "return_fields": self.fields[etype],
                "filters": {"logical_operator": "and", "conditions": conds},
                "return_only": seg.return_only, "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": self.page_size, "current_page": 1},
                "api_return_image_urls": True, "return_paging_info_without_counts": True}, slot=self._slots)
            self.requests += 1
            ents = (res or {}).get("entities") or []
            if ents:
                cursor = ents[-1]["id"]
            last = len(ents) < self.page_size
            page = _Page(plan, seg, ents, version, cursor, last)
            if prev is not None:
                await prev.committed.wait()
            await queue.put(page)
            prev = page
            if last:
                return prev

    async def _writer(self, queue: asyncio.Queue[_Page | None], thread: concurrent.futures.Executor,
                      aside: tuple[asyncio.Event, asyncio.Event] | None = None) -> None:
        """Commit pages as they come; build deferred indexes between them, or, with `aside`
        (more indexes queued, writer done), leave them to `_index_aside`."""
        loop = asyncio.get_running_loop()
        queued, finished = aside if aside is not None else (None, None)
        end = False
        while not end:
            if queued is None and self._unindexed and queue.empty():  # idle: build an index meanwhile
                await loop.run_in_executor(thread, self._build_index)
                continue
            item = await queue.get()
            if item is None:
                break
            batch = [item]
            while not queue.empty() and len(batch) < self.fetchers:  # what is waiting, in one transaction
                nxt = queue.get_nowait()
                if nxt is None:
                    end = True
                    break
                batch.append(nxt)
            await loop.run_in_executor(thread, self._commit, batch)
            for p in batch:
                p.committed.set()
                if self.progress and p.ents:
                    self.progress(p.plan.etype, len(p.ents))
            if queued is not None:
                if self._unindexed:
                    queued.set()
            elif self._unindexed and not end:  # one between batches, so pages never wait on more
                await loop.run_in_executor(thread, self._build_index)
        if queued is not None and finished is not None:
            finished.set()
            queued.set()
            return
        while self._unindexed:
            await loop.run_in_executor(thread, self._build_index)

    async def _index_aside(self, more: asyncio.Event, writer_done: asyncio.Event) -> None:
        """PostgreSQL: build finished types' indexes on a connection of their own while the
        writer goes on committing pages. Building one locks only its table, which takes no
        more pages, so no fetcher stalls behind it (on SQLite, one writer at a time: a Task
        index of a 1M site stopped fetching for ~0.5 s each). Ends when the writer has
        finished and every index is built."""
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sgcache-scan-index") as thread:
            while True:
                while self._unindexed:
                    await loop.run_in_executor(thread, self._build_index)
                if writer_done.is_set():
                    return
                more.clear()  # the writer sets it from this loop, after its commit queued them
                await more.wait()

    def _build_index(self) -> None:
        with self.store.engine.begin() as conn:
            self.store.ensure_index(conn, self._unindexed.popleft())

    def _in_txn(self, fn: Callable[[Connection], None]) -> None:
        with self.store.engine.begin() as conn:
            fn(conn)

    def _commit(self, batch: list[_Page]) -> None:
        """Upsert a batch of pages and advance their segments' cursors, in one transaction."""
        groups: dict[tuple[str, bool], list[_Page]] = collections.defaultdict(list)
        for p in batch:
            groups[(p.plan.etype, p.seg.return_only == "active")].append(p)
        touched: dict[str, TypePlan] = {}
        completed: list[str] = []
        with self.store.engine.begin() as conn:
            for (etype, active), pages in sorted(groups.items()):
                recs = [r for p in pages for r in p.ents]
                if recs:  # the oldest fetch's version: no page claims to be newer than it is
                    self.store.upsert(conn, etype, recs, active=active, version=min(p.version for p in pages),
                                      fresh=pages[0].plan.deferred)
            for p in batch:
                p.seg.cursor = p.cursor
                p.seg.done = p.seg.done or p.last
                p.plan.rows += len(p.ents)
                touched[p.plan.etype] = p.plan
            for plan in touched.values():
                if plan.done and plan.deferred:
                    completed.append(plan.etype)
                if plan.done and self.type_done is not None:
                    self.type_done(conn, plan)
            self.store.set_states(conn, {type_key(self.kind, t): p.to_json() for t, p in touched.items()})
        for etype in completed:  # committed: now its indexes (the writer builds them one at a time)
            self._unindexed.extend(self.store.indexes(etype))


async def _gather(*aws: Any) -> None:
    """Run together; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            for aw in aws:
                tg.create_task(aw)
    except BaseExceptionGroup as eg:
        first: BaseException = eg
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def full_scan(upstream: Upstream, store: Store, types: Iterable[str] | None = None,
                    projects: list[int] | None = None, progress: Progress | None = None,
                    page_size: int | None = None, *, concurrency: int = DEFAULT_CONCURRENCY,
                    resume: bool = False, planned: Planned | None = None) -> ScanResult:
    """Load every active and retired entity of the given (default: all cached) types.

    `resume` continues an interrupted full scan of the same projects from its committed
    cursors (`sgcache scan --full` does); otherwise any such scan is discarded. Callers
    that take the event position from the moment they start (the watcher's rescan) must
    not resume an older scan.
    """
    wanted = list(dict.fromkeys(types or store.entities))
    for etype in wanted:
        if etype not in store:
            raise ValueError(f"{etype} is not a cached entity type")
    t0 = time.monotonic()
    scan = ParallelScan(upstream, store, "full", concurrency=concurrency, page_size=page_size,
                        progress=progress, planned=planned)
    await scan.prepare(wanted, projects, resume)
    await scan.run()
    started = scan.started_at
    res = ScanResult("full", format_datetime(started), time.monotonic() - t0,
                     {t: p.rows - p.earlier for t, p in scan.plans.items()},
                     {t: p.earlier for t, p in scan.plans.items() if p.earlier})
    # A project-restricted scan holds only part of each type: it primes nothing.
    await asyncio.to_thread(_record, store, res, started, [] if projects else wanted, scan.forget)
    await asyncio.to_thread(analyze, store)
    log.info("full scan: %d rows in %.1fs (%d requests, pages of %d, %d in flight)%s", sum(res.rows.values()),
             res.seconds, scan.requests, scan.page_size, scan.concurrency,
             f"; resumed: {sum(res.resumed.values())} rows loaded by earlier runs" if res.resumed else "")
    return res


def analyze(store: Store) -> None:
    """Refresh the planner's statistics after bulk loads: without them SQLite walks the
    low-selectivity `_active` index instead of starting from a selective filter."""
    from sqlalchemy import text
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def _get_state(store: Store, key: str) -> Any:
    with store.engine.connect() as conn:
        return store.get_state(conn, key)


#: State key: entity types whose full scan completed; only those are served locally.
PRIMED = "primed_types"


def primed_types(store: Store) -> set[str]:
    return set(_get_state(store, PRIMED) or [])


def _record(store: Store, res: ScanResult, started: dt.datetime, primed: list[str] | None = None,
            in_txn: Callable[[Connection], None] | None = None) -> None:
    with store.engine.begin() as conn:
        done = set(store.get_state(conn, PRIMED) or []) | set(primed or [])
        if primed:
            store.set_state(conn, PRIMED, sorted(done))
        # Interval scans start from the oldest point every primed type is current at: a
        # full scan of some types must not skip changes to the others.
        covered_all = set(primed or []) >= set(store.entities)
        if res.kind != "full" or covered_all or store.get_state(conn, "scan_since") is None:
            store.set_state(conn, "scan_since", format_datetime(started))
        record: dict[str, Any] = {"started_at": res.started_at, "seconds": round(res.seconds, 3), "rows": res.rows}
        if res.resumed:
            record["resumed"] = res.resumed
        store.set_state(conn, f"last_{res.kind}_scan", record)
        if in_txn is not None:
            in_txn(conn)


def scan_started_before(started_at: str | None, overlap: dt.timedelta = SCAN_OVERLAP) -> str | None:
    """The wire time `overlap` before a recorded scan start (where replay must begin)."""
    if not started_at:
        return None
    t = parse_datetime(started_at)
    return format_datetime(t - overlap) if t else None
