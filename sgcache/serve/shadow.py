"""Shadow verification: ask the site again for a sample of locally answered reads, and compare.

Every other fidelity check compares the cache with our own mock; in production only
this compares it with the real site. After a `read` or `summarize` is answered from
the store, a share of them (`SGCACHE_SHADOW_RATE`) is sent on to the site, in the
background, exactly as the caller sent it (the caller's own credentials, held in memory
for that one call and never stored or logged), and the two answers are compared as the
client decodes them (same page, same order).

A difference is **lag** when the site changed what differs after the cache's position
at answer time, decided from the site's own records, never from a timer:

* an EventLogEntry after that position (the last applied event id, or below the oldest
  missing id of the backlog) names a differing entity, an entity its differing values
  link to, or (for deep paths, summaries and paging counts) an entity of a type involved;
* or the cache's row has moved since it answered (re-answered now it agrees with the site);
* or the site's `updated_at` is newer than the cache's copy (a script with events off;
  the next interval scan brings it), per entity, or per type for linked types and summaries;
* and on a full or later page, entities that only moved in or out of the page count as
  lag once any difference in it is lag (the page shifted).

Everything else is a **mismatch**: counted, logged with a short diff (entity ids and
field names only) and written to `_sgcache_shadow`, which quarantines the request's
shape (sgcache/store/quarantine.py says which granularity and why): its reads pass
through until an operator clears it or `validate data --repair` on the type passes.
The shadow call is made as the caller; when the policy names callers' permission groups
and the cache's unrestricted answer agrees with what the site shows the cache's own
script, what differs is what this caller's group is shown, and the mismatch quarantines
the group instead (serve/group_quarantine.py: a policy that disagrees with the site's is
wrong in every shape).

Cost to callers: a `random()` per local answer, a dict lookup per read of a type with a
quarantine. Shadow calls never delay an answer (a bounded queue, dropped when full),
never exceed `SGCACHE_SHADOW_BUDGET` calls per second (a token bucket, spent also by
the classification reads), and stop while the site is failing.

The comparison itself is `shadow_diff.py`. Why this module is still ~600 lines: sampling,
the budget, the shadow call, classifying lag from the event log and recording a
mismatch (of a shape or of a permission group) share one background worker and its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import timedelta
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

from ..protocol import errors, jsoncodec
from ..protocol.values import format_datetime, parse_datetime, utcnow
from ..read.engine import Passthrough
from ..read.local_rpcs import LOCAL_RPCS
from ..read.summarize import Summarizer
from ..runtime import CacheService
from ..store import quarantine as q
from ..sync.events import BACKLOG, LAST_ID
from ..sync.scan import scan_started_before
from ..upstream import UpstreamUnavailable
from . import group_quarantine as gq
from .metrics import Metrics, caller_of
from .shadow_diff import Diff, by_id, compare, event_names, get, linked_entities

log = logging.getLogger("sgcache.shadow")

ET = "EventLogEntry"
#: Samples waiting for their shadow call, at most (more are dropped, never waited for).
QUEUE_SIZE = 64
#: A sample holds the request and the answer until its shadow call: bigger ones are not taken.
MAX_SAMPLE_BYTES = 4_000_000
#: Seconds between reads of the quarantine list and the cache's event position.
REFRESH_EVERY = 2.0
#: Events read per page, and pages at most, to explain a difference as lag. A cache
#: further behind than that is lagging, which the status page shows: the difference is lag.
EVENT_PAGE = 500
MAX_EVENT_PAGES = 8
#: After a failed shadow call, no more for this long (the site is failing).
PAUSE_AFTER_FAILURE = 10.0
#: A classification waits at most this long for budget, then gives up (counted as skipped).
MAX_BUDGET_WAIT = 60.0
RESULTS = ("match", "lag", "mismatch")


class TokenBucket:
    """At most `rate` takes per second, none in bursts (capacity one)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._tokens = 1.0
        self._at = clock()

    def _fill(self) -> None:
        now = self.clock()
        self._tokens = min(1.0, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self) -> bool:
        if self.rate <= 0:
            return False
        self._fill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def take(self, max_wait: float) -> bool:
        """Wait for a token, at most `max_wait` seconds."""
        if self.rate <= 0:
            return False
        deadline = self.clock() + max_wait
        while not self.try_take():
            wait = (1.0 - self._tokens) / self.rate
            if self.clock() + wait > deadline:
                return False
            await asyncio.sleep(wait)
        return True


@dataclass(frozen=True)
class Position:
    """The cache's position in the site's history: every event up to `after_id` is applied;
    without an event position, what changed after `after_time` (the last full scan) may not be."""

    after_id: int | None = None
    after_time: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"after_id": self.after_id, "after_time": self.after_time}


@dataclass(eq=False)
class Sample:
    """One locally answered read waiting for its shadow call."""

    method: str
    params: dict[str, Any]
    local: bytes  # the body the caller was answered with
    position: Position
    caller: str
    headers: dict[str, str]
    body: bytes = field(repr=False)  # the caller's request as sent, credentials inside: memory only
    full_view: bool = True  # answered unrestricted (no permission filters applied for this caller)
    group: str | None = None  # the caller's permission group as the policy names it (None: not looked up)
    policy: dict[str, Any] | None = None  # that group's policy when answered


# -- the verifier ---------------------------------------------------------------------------

class Shadow:
    """Samples local answers, checks them against the site, and holds the quarantine list."""

    def __init__(self, service: CacheService, metrics: Metrics, *, rate: float | None = None,
                 budget: float | None = None, queue_size: int = QUEUE_SIZE) -> None:
        self.service = service
        self.metrics = metrics
        self.rate = max(0.0, min(1.0, service.config.shadow_rate if rate is None else rate))
        self.budget = TokenBucket(service.config.shadow_budget if budget is None else budget)
        self.queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=queue_size)
        self.position = Position()
        #: entity type -> quarantined shape keys (the database's list, refreshed)
        self.quarantine: dict[str, set[str]] = {}
        self.report: dict[str, Any] = {"quarantined": [], "mismatches": []}
        self.counts: dict[str, int] = {r: 0 for r in RESULTS}
        self.skipped: dict[str, int] = {}
        self._paused_until = 0.0
        self._ready = False
        self.pending = 0  # samples queued or being verified
        self._tasks: list[asyncio.Task[Any]] = []
        #: The app's Permissions (serve/permissions.py): its groups' quarantines are kept here.
        self.permissions: Any = None
        self.group_ttl = max(0.0, service.config.permissions_quarantine)

    @property
    def table(self) -> Any:
        return self.service.store.shadow_table

    # -- the request path -------------------------------------------------------------
    def check(self, etype: str, method: str, params: Mapping[str, Any]) -> None:
        """Passthrough if this read's shape is quarantined (a dict lookup unless its type has one)."""
        keys = self.quarantine.get(etype)
        if keys:
            key = q.shape_key(q.shape_of(method, params))
            if key in keys:
                raise Passthrough(f"quarantined shape {key}: a shadow read found the cache wrong "
                                  "(`sgcache shadow report`)")

    def check_rpc(self, method: str, params: Mapping[str, Any]) -> None:
        """`check` for a note thread or a text search, quarantined under its shape's type."""
        if self.quarantine:
            shape = q.shape_of(method, params)
            if q.shape_key(shape) in self.quarantine.get(str(shape["type"]), ()):
                raise Passthrough(f"quarantined shape {q.shape_key(shape)}: a shadow {method} found the cache "
                                  "wrong (`sgcache shadow report`)")

    def offer(self, method: str, params: dict[str, Any], body: bytes, answer: bytes,
              auth: Any, headers: Mapping[str, str], *, full_view: bool = True, grant: Any = None) -> None:
        """After a local answer: maybe queue it for a shadow call. Never waits.

        `full_view` False: the answer was restricted to what the caller may see (permissions);
        `grant` (serve/permissions.py) names the caller's group, which a mismatch quarantines.
        """
        if self.rate <= 0 or random.random() >= self.rate:
            return
        if not self._ready:
            return self._skip("starting")
        if time.monotonic() < self._paused_until or self.service.upstream.site_down:
            return self._skip("site_down")
        if self.queue.full():
            return self._skip("queue_full")
        if len(body) + len(answer) > MAX_SAMPLE_BYTES:
            return self._skip("too_big")
        if not self.budget.try_take():
            return self._skip("budget")
        caller, sudo = caller_of(auth if isinstance(auth, Mapping) else None)
        hdrs = {k: v for k, v in headers.items() if k.lower() in ("user-agent", "locale")}
        group = getattr(grant, "group", None)
        self.queue.put_nowait(Sample(method, params, answer, self.position,
                                     caller + (f" as {sudo}" if sudo else ""), hdrs, body, full_view,
                                     group, grant.rules.describe() if group is not None else None))
        self.pending += 1

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.metrics.shadow_skipped.labels(reason).inc()

    # -- lifecycle --------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self, workers: int = 2) -> AsyncIterator["Shadow"]:
        """Refresh the quarantine list now and then; with a rate, run the shadow calls."""
        await self.start()
        self._tasks.append(asyncio.create_task(self._refresher()))
        if self.rate > 0:
            self._tasks += [asyncio.create_task(self._worker()) for _ in range(workers)]
        try:
            yield self
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._tasks.clear()

    async def start(self) -> None:
        """Create the table if an older database lacks it, and read the state once."""
        await asyncio.to_thread(q.ensure, self.service.store.engine, self.table)
        await self.refresh()
        self._ready = True

    async def refresh(self) -> None:
        """Re-read the quarantine list, the recent mismatches and the cache's event position."""
        self.quarantine, self.report, self.position = await asyncio.to_thread(self._read_state)
        if self.permissions is not None:
            self.permissions.quarantined = await asyncio.to_thread(self._read_groups)

    def _read_groups(self) -> dict[str, gq.GroupQuarantine]:
        with self.service.store.engine.begin() as conn:  # may mark expired ones cleared
            return gq.active(conn, self.table, self.permissions.policy_of, self.group_ttl)

    def _read_state(self) -> tuple[dict[str, set[str]], dict[str, Any], Position]:
        store = self.service.store
        with store.engine.connect() as conn:
            quarantined = q.quarantined(conn, self.table)
            rows = q.mismatches(conn, self.table, limit=50)
            last = store.get_state(conn, LAST_ID)
            backlog = store.get_state(conn, BACKLOG) or {}
            full = store.get_state(conn, "last_full_scan") or {}
        if isinstance(last, int):
            missing = [int(k) for k in backlog]
            pos = Position(after_id=min([last, *(m - 1 for m in missing)]))
        else:
            pos = Position(after_time=scan_started_before(full.get("started_at") if isinstance(full, dict) else None))
        report = {"quarantined": [r for r in rows if r["quarantined"] and gq.GROUP not in (r["shape"] or {})],
                  "mismatches": rows[:20]}  # (groups quarantined: `quarantined_groups`)
        return quarantined, report, pos

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database is briefly away: keep the last list
                log.warning("shadow: could not read the quarantine list: %s", type(e).__name__)

    async def _worker(self) -> None:
        while True:
            sample = await self.queue.get()
            try:
                await self.verify(sample)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("shadow verification of a %s failed", sample.method)
            finally:
                self.queue.task_done()
                self.pending -= 1
                del sample  # the caller's credentials go with it

    async def drain(self) -> None:
        """Verify every queued sample now (tests; the workers do this when running)."""
        while not self.queue.empty():
            sample = self.queue.get_nowait()
            try:
                await self.verify(sample)
            finally:
                self.queue.task_done()
                self.pending -= 1

    def snapshot(self) -> dict[str, Any]:
        """For /status.json: settings, this process's counts, quarantines and recent mismatches."""
        return {"rate": self.rate, "budget_per_second": self.budget.rate, "results": dict(self.counts),
                "skipped": dict(self.skipped), "queued": self.pending, "position": self.position.to_json(),
                "quarantined": [_public(r) for r in self.report["quarantined"]],
                "quarantined_groups": [g.to_json() for _, g in sorted(
                    (self.permissions.quarantined if self.permissions is not None else {}).items())],
                "mismatches": [_public(r) for r in self.report["mismatches"]]}

    # -- one sample -------------------------------------------------------------------
    async def verify(self, s: Sample) -> str | None:
        """Ask the site, compare, classify; returns the result (None: skipped)."""
        up = self.service.upstream
        try:
            resp = await up.post_json(s.body, s.method, s.headers)  # the callers' lane, their credentials
        except UpstreamUnavailable:
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            self._skip("site_error")
            return None
        if resp.status_code != 200:
            if resp.status_code >= 500:
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            self._skip("site_error")
            return None
        try:
            site = jsoncodec.loads(resp.content)
            cache = jsoncodec.loads(s.local)
        except (ValueError, RecursionError):
            self._skip("site_error")
            return None
        if not isinstance(site, dict) or site.get("exception") or "results" not in site:
            self._skip("site_fault")  # expired session, permissions: the site decided, not a verdict
            return None
        diff = compare(s.method, cache.get("results"), site["results"])
        if not diff:
            return self._count("match")
        why = await self._explain(s, cache["results"], site["results"], diff)
        if why is None:
            self._skip("undecided")
            return None
        if why:
            log.debug("shadow lag on %s %s: %s (%s)", s.method, s.params.get("type"), diff.short(), why)
            return self._count("lag")
        result = self._count("mismatch")  # counted before the quarantine shows (status readers see both)
        await self._mismatch(s, diff)
        return result

    def _count(self, result: str) -> str:
        self.counts[result] += 1
        self.metrics.shadow.labels(result).inc()
        return result

    async def _mismatch(self, s: Sample, diff: Diff) -> None:
        if s.group is not None and s.policy is not None and await self._unrestricted_agree(s) is not False:
            return await self._group_mismatch(s, diff)  # what differs is what this group is shown
        shape = q.shape_of(s.method, s.params)
        key = q.shape_key(shape)
        etype = str(shape["type"])  # a read's type; a note thread's or a search's, its shape's

        def write() -> int:
            with self.service.store.engine.begin() as conn:
                return q.record(conn, self.table, method=s.method, shape=shape, diff=diff.to_json(),
                                position=s.position.to_json(), caller=s.caller)
        mid = await asyncio.to_thread(write)
        self.quarantine = {**self.quarantine, etype: self.quarantine.get(etype, set()) | {key}}
        log.warning("shadow mismatch #%d: %s %s differs from the site (%s); shape %s quarantined, its reads "
                    "pass through until `sgcache shadow clear %d`%s", mid, s.method, etype, diff.short(), key, mid,
                    "" if s.method in LOCAL_RPCS else f" or `sgcache validate data --repair {etype}`")
        with contextlib.suppress(Exception):
            await self.refresh()

    async def _unrestricted_agree(self, s: Sample) -> bool | None:
        """Whether the cache's unrestricted answer to the request is the site's answer to the
        cache's own script (None: unknown). If not, the rows or the query are wrong for
        everyone: the shape is quarantined, not the group."""
        try:
            local = await asyncio.to_thread(self._local, s.method, s.params)
        except Exception:  # Passthrough now (a rebuild, a schema change): no verdict from it
            return None
        if not await self.budget.take(MAX_BUDGET_WAIT):
            return None
        try:
            site = await self.service.upstream.call(s.method, s.params)
        except (errors.Fault, UpstreamUnavailable):
            return None
        return not compare(s.method, jsoncodec.loads(jsoncodec.dumps(local)), site)

    async def _group_mismatch(self, s: Sample, diff: Diff) -> None:
        """The caller's group is quarantined: its policy may disagree with the site's."""
        assert s.group is not None and s.policy is not None
        shape = gq.group_shape(s.method, s.params, s.group, s.policy)
        etype = str(s.params.get("type"))

        def write() -> int:
            with self.service.store.engine.begin() as conn:
                return q.record(conn, self.table, method=s.method, shape=shape, diff=diff.to_json(),
                                position=s.position.to_json(), caller=s.caller)
        mid = await asyncio.to_thread(write)
        if self.permissions is not None:  # at once in this process; the refresh below reads the table
            at = utcnow()
            until = format_datetime(at + timedelta(seconds=self.group_ttl)) if self.group_ttl > 0 else None
            self.permissions.quarantined = {**self.permissions.quarantined, s.group: gq.GroupQuarantine(
                s.group, mid, format_datetime(at), until)}
        log.warning("shadow mismatch #%d: %s %s as a caller of permission group %s differs from the site (%s); "
                    "the group is quarantined, its callers' reads pass through until `sgcache shadow clear %d` "
                    "or its policy changes", mid, s.method, etype, s.group, diff.short(), mid)
        with contextlib.suppress(Exception):
            await self.refresh()

    # -- lag or mismatch ----------------------------------------------------------------
    async def _explain(self, s: Sample, cache: Any, site: Any, diff: Diff) -> str | None:
        """Why the difference is lag ("" if it is not; None if the budget ran out deciding)."""
        shape = q.shape_of(s.method, s.params)
        etype = str(shape["type"])
        linked = q.linked_types(shape)  # a note thread's or a search's: every type it reads
        events = await self._events_after(s.position)
        if events is None:
            return None
        named, complete = events
        if not complete:
            return "the cache is more events behind than are read to explain it"
        named_types = {t for t, _ in named}
        if s.method == "summarize" or not diff.ids():
            # No entity to point at (a summary, the order, a count): any change to the types involved explains it.
            if named_types & ({etype} | linked):
                return "events after the cache's position touch the types involved"
            if await self._cache_agrees_now(s, site):
                return "the cache has moved since it answered"
            newer = await self._types_newer_on_site({etype} | linked)
            if newer is None:
                return None
            return f"the site has newer updated_at on {', '.join(sorted(newer))}" if newer else ""
        left = self._unexplained_by_events(etype, linked, named, named_types, cache, site, diff)
        if left:
            left -= await self._agreeing_now(s, site, left)
        if left:
            newer_ids = await self._entities_newer_on_site(etype, left)
            if newer_ids is None:
                return None
            left -= newer_ids
        if left and linked:
            newer_types = await self._types_newer_on_site(linked)
            if newer_types is None:
                return None
            if newer_types:
                return f"the site has newer updated_at on {', '.join(sorted(newer_types))}"
        if left and left != diff.ids() and left <= set(diff.only_cache) | set(diff.only_site) \
                and self._paged(s.params, cache, site):
            left = set()  # they only moved in or out of a page that the other (lagging) changes shifted
        return "" if left else "changed on the site after the cache's position"

    def _unexplained_by_events(self, etype: str, linked: set[str], named: set[tuple[str, int]],
                               named_types: set[str], cache: Any, site: Any, diff: Diff) -> set[int]:
        cby = by_id(cache.get("entities") or []) or {}
        sby = by_id(site.get("entities") or []) or {}
        deep = bool(named_types & linked)
        left: set[int] = set()
        for i in diff.ids():
            if (etype, i) in named:
                continue
            fields = diff.fields.get(i, [])
            links: set[tuple[str, int]] = set()
            for f in fields:
                linked_entities((cby.get(i) or {}).get(f), links)
                linked_entities((sby.get(i) or {}).get(f), links)
            if links & named:
                continue
            if deep and (not fields or any("." in f for f in fields)):
                continue  # a deep value or a deep filter over a type the events changed
            left.add(i)
        return left

    @staticmethod
    def _paged(params: Mapping[str, Any], cache: Any, site: Any) -> bool:
        paging = params.get("paging") if isinstance(params.get("paging"), dict) else {}
        per = paging.get("entities_per_page")
        page = paging.get("current_page", 1)
        if isinstance(page, int) and page > 1:
            return True
        return isinstance(per, int) and any(len(get(r, "entities") or []) >= per for r in (cache, site))

    async def _site(self, params: dict[str, Any]) -> Any:
        """One read with the cache's own credentials, inside the budget (None: no budget)."""
        if not await self.budget.take(MAX_BUDGET_WAIT):
            return None
        return await self.service.upstream.call("read", params)

    async def _events_after(self, pos: Position) -> tuple[set[tuple[str, int]], bool] | None:
        """Entities named by events after the position, and whether all of them were read."""
        if pos.after_id is not None:
            cond = {"path": "id", "relation": "greater_than", "values": [pos.after_id]}
        elif pos.after_time is not None:
            cond = {"path": "created_at", "relation": "greater_than", "values": [pos.after_time]}
        else:
            return set(), False  # no position at all: nothing can be called a mismatch
        named: set[tuple[str, int]] = set()
        last = 0
        for _ in range(MAX_EVENT_PAGES):
            res = await self._site({
                "type": ET, "return_fields": ["id", "entity", "meta"],
                "filters": {"logical_operator": "and", "conditions": [
                    cond, {"path": "id", "relation": "greater_than", "values": [last]}]},
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": EVENT_PAGE, "current_page": 1},
                "return_only": "active", "return_paging_info_without_counts": True})
            if res is None:
                return None
            page = res.get("entities") or []
            for ev in page:
                event_names(ev, named)
            if len(page) < EVENT_PAGE:
                return named, True
            last = page[-1]["id"]
        return named, False

    async def _local_now(self, s: Sample) -> Any:
        """The cache's answer to the same request now, as the client decodes it (None: not local now,
        or not the same answer: a caller's restricted view is not re-created here)."""
        if not s.full_view:
            return None
        try:
            now = await asyncio.to_thread(self._local, s.method, s.params)
        except Exception:  # Passthrough now (a rebuild, a schema change): no verdict from it
            return None
        return jsoncodec.loads(jsoncodec.dumps(now))

    async def _cache_agrees_now(self, s: Sample, site: Any) -> bool:
        now = await self._local_now(s)
        return now is not None and not compare(s.method, now, site)

    async def _agreeing_now(self, s: Sample, site: Any, ids: set[int]) -> set[int]:
        """Of these differing entities, those the cache now answers as the site does: its rows
        moved after it answered, and the cache only ever writes what it read from the site."""
        now = await self._local_now(s)
        if now is None:
            return set()
        d = compare(s.method, now, site)
        return {i for i in ids if i not in d.ids()}

    def _local(self, method: str, params: dict[str, Any]) -> Any:
        svc = self.service
        with svc.store.engine.connect() as conn:
            if method == "summarize":
                return Summarizer(svc.reader).summarize(conn, params)
            if method in LOCAL_RPCS:
                return LOCAL_RPCS[method](svc.reader, conn, params, gate=getattr(svc, "read_gate", None))
            return svc.reader.read(conn, params)

    async def _entities_newer_on_site(self, etype: str, ids: set[int]) -> set[int] | None:
        """Which entities the site changed after the cache's copy (`updated_at`), and which
        the cache lacks that the site changed after its last scan began."""
        f = {"logical_operator": "and", "conditions": [{"path": "id", "relation": "in", "values": sorted(ids)}]}
        site: dict[int, Any] = {}
        for ro in ("active", "retired"):
            res = await self._site({"type": etype, "return_fields": ["updated_at"], "filters": f, "return_only": ro,
                                    "paging": {"entities_per_page": max(1, len(ids)), "current_page": 1}})
            if res is None:
                return None
            site.update({e["id"]: parse_datetime(e.get("updated_at")) for e in res.get("entities") or []})
            if set(site) >= ids:
                break
        cache: dict[int, Any] = {}
        for ro in ("active", "retired"):
            try:
                res = await asyncio.to_thread(self._local, "read", {
                    "type": etype, "return_fields": ["updated_at"], "filters": f, "return_only": ro,
                    "paging": {"entities_per_page": max(1, len(ids)), "current_page": 1}})
            except (Passthrough, errors.Fault):
                return set()  # updated_at is not cached: no verdict from it
            cache.update({e["id"]: parse_datetime(e.get("updated_at")) for e in res.get("entities") or []})
        since = await asyncio.to_thread(self._scan_since)
        out = set()
        for i in ids:
            s, c = site.get(i), cache.get(i)
            if s is None:
                continue
            if (c is not None and s > c) or (i not in cache and since is not None and s >= since):
                out.add(i)
        return out

    def _scan_since(self) -> Any:
        store = self.service.store
        with store.engine.connect() as conn:
            since = store.get_state(conn, "scan_since")
        return parse_datetime(scan_started_before(since)) if since else None

    async def _types_newer_on_site(self, types: Iterable[str]) -> set[str] | None:
        """Types whose newest `updated_at` on the site is newer than the cache's newest."""
        out: set[str] = set()
        for t in sorted(types):
            if t not in self.service.store:
                continue
            params = {"type": t, "return_fields": ["updated_at"], "return_only": "active",
                      "sorts": [{"field_name": "updated_at", "direction": "desc"}],
                      "paging": {"entities_per_page": 1, "current_page": 1}}
            try:
                mine = await asyncio.to_thread(self._local, "read", dict(params))
            except (Passthrough, errors.Fault):
                continue
            res = await self._site(dict(params))
            if res is None:
                return None
            s = [parse_datetime(e.get("updated_at")) for e in res.get("entities") or []]
            c = [parse_datetime(e.get("updated_at")) for e in mine.get("entities") or []]
            if s and s[0] is not None and (not c or c[0] is None or s[0] > c[0]):
                out.add(t)
        return out


def _ids_of(results: Any) -> set[int]:
    return {e["id"] for e in get(results, "entities") or [] if isinstance(e, dict) and isinstance(e.get("id"), int)}


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A mismatch row as the status page shows it."""
    return {k: row.get(k) for k in ("id", "at", "method", "entity_type", "shape_key", "shape", "diff", "caller",
                                     "quarantined", "cleared_at", "cleared_by")}
