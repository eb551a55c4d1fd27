"""The event watcher: follow the site's EventLogEntry log and refresh what it names.

Each batch of events is turned into the set of entities it touched; those are re-read
from the site in bulk and stored, together with the new position in the log and the
backlog of missing ids, in ONE transaction (so a crash replays, never skips). When the
writer falls behind a burst, the pages queued meanwhile go into its next transaction
together, an entity named on several of them written once, from its latest fetch. Events
are never applied value by value: the refresh reads the current state, and rows keep
the start time of the fetch that wrote them, so a late or replayed event cannot roll
a row back. The traps this handles are listed in docs/event-log.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from ..config import Config
from ..store.tables import Store
from ..upstream import Upstream
from .refresh import Fetched, Versions
from .scan import full_scan, return_fields_for

log = logging.getLogger("sgcache.events")

ET = "EventLogEntry"
EVENT_FIELDS = ["id", "event_type", "attribute_name", "entity", "meta", "created_at"]
_EVENT_RE = re.compile(r"^Shotgun_(?P<type>\w+?)_(?P<action>New|Change|Retirement|Revival)$")
#: Event types that carry per-user values, not site data.
NOISE_TYPES = frozenset({"Shotgun_Reading_Change"})
LAST_ID, BACKLOG = "last_event_id", "event_backlog"
#: Most events one transaction applies when queued pages are merged: bounds the memory
#: held and how long a transaction keeps readers from seeing the first of them.
MERGE_EVENTS = 5000


@dataclass
class Plan:
    """What one batch of events asks for."""

    touched: dict[str, set[int]] = field(default_factory=dict)
    revived: dict[str, set[int]] = field(default_factory=dict)
    schema_changed: bool = False
    ignored: int = 0
    #: (type, id) -> the events that named it, for the audit log
    causes: dict[tuple[str, int], list[str]] = field(default_factory=dict)


def plan_events(events: list[dict[str, Any]], store: Store) -> Plan:
    """Which cached entities a batch of events touched (pure; tested on its own)."""
    plan = Plan()
    for ev in events:
        etype_s = ev.get("event_type") or ""
        meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
        m = _EVENT_RE.match(etype_s)
        attr = ev.get("attribute_name") or meta.get("attribute_name") or ""
        if m is None or etype_s in NOISE_TYPES or "current_user" in attr:
            plan.ignored += 1
            continue
        if m["type"] == "DisplayColumn":
            plan.schema_changed = True
            continue
        # Trap 1: `entity` reads null for retired entities; meta always names it.
        etype = meta.get("entity_type") or m["type"]
        eid = meta.get("entity_id")
        if not isinstance(eid, int) or etype not in store or etype == ET:
            plan.ignored += 1
            continue
        action = m["action"]
        # A Change of a field the cache does not hold still refreshes the entity: the same
        # write moved `updated_at` and `updated_by` (and maybe fields computed from it).
        if action == "Change" and meta.get("in_create"):  # the New event fetches the whole entity
            plan.ignored += 1
            continue
        plan.touched.setdefault(etype, set()).add(eid)
        plan.causes.setdefault((etype, eid), []).append(f"{ev['id']}:{action}{':' + attr if attr else ''}")
        if action == "Revival":
            plan.revived.setdefault(etype, set()).add(eid)
    return plan


def event_row(ev: dict[str, Any]) -> dict[str, Any]:
    """An event as stored: `entity` restored from meta when the site hid it (trap 1).

    The site shows `entity` as null while the entity is retired; the cache stores the
    link itself and hides it at read time the same way, so a revival shows it again.
    """
    row = {k: v for k, v in ev.items() if k != "type"}
    meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
    m = _EVENT_RE.match(ev.get("event_type") or "")
    if row.get("entity") is None and m and meta.get("entity_type") == m["type"] \
            and isinstance(meta.get("entity_id"), int) and m["type"] != "DisplayColumn":
        row["entity"] = {"type": m["type"], "id": meta["entity_id"]}
    return row


@dataclass
class _Batch:
    """One page of events with what it touched, fetched; written in log order."""

    events: list[dict[str, Any]]
    fetched: Fetched
    version: int
    causes: dict[tuple[str, int], list[str]]
    last_id: int
    backlog: dict[int, float]


class EventWatcher:
    """Polls EventLogEntry after the last applied id; keeps a backlog of missing ids."""

    def __init__(self, store: Store, upstream: Upstream, refresher: Any, config: Config,
                 page_size: int = 500) -> None:
        self.store = store
        self.upstream = upstream
        self.refresher = refresher
        self.config = config
        self.page_size = page_size
        self.last_id: int | None = None
        self.backlog: dict[int, float] = {}  # missing id -> when first missed (epoch)
        self.schema_changed = False
        self.stats: dict[str, int] = {"events": 0, "gaps_filled": 0, "gaps_expired": 0, "rescans": 0}
        self.fields = list(dict.fromkeys(EVENT_FIELDS + (return_fields_for(store, ET) if ET in store else [])))

    def rebind(self, store: Store, refresher: Any) -> None:
        """Use a rebuilt Store (after a schema change); the position is unchanged."""
        self.store, self.refresher = store, refresher
        self.fields = list(dict.fromkeys(EVENT_FIELDS + (return_fields_for(store, ET) if ET in store else [])))

    # -- state ------------------------------------------------------------------------------
    def _load(self) -> None:
        with self.store.engine.connect() as conn:
            self.last_id = self.store.get_state(conn, LAST_ID)
            self.backlog = {int(k): float(v) for k, v in (self.store.get_state(conn, BACKLOG) or {}).items()}

    def _save(self, conn: Connection, last_id: int, backlog: dict[int, float]) -> None:
        self.store.set_states(conn, {LAST_ID: last_id, BACKLOG: {str(k): v for k, v in sorted(backlog.items())}})

    def _get_state(self, key: str) -> Any:
        with self.store.engine.connect() as conn:
            return self.store.get_state(conn, key)

    # -- the log's ends ---------------------------------------------------------------------
    async def _edge(self, direction: str, filters: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        res = await self.upstream.call("read", {
            "type": ET, "return_fields": ["id", "created_at"],
            "filters": {"logical_operator": "and", "conditions": filters or []},
            "sorts": [{"field_name": "id", "direction": direction}],
            "paging": {"entities_per_page": 1, "current_page": 1},
            "return_only": "active", "return_paging_info_without_counts": True})
        ents = res.get("entities") or []
        return ents[0] if ents else None

    async def start(self) -> None:
        """Load the position; find one if there is none; rescan if the log lost ours."""
        await asyncio.to_thread(self._load)
        if self.last_id is None:
            scan = await asyncio.to_thread(self._get_state, "last_full_scan")
            started = (scan or {}).get("started_at")
            if started:
                from .scan import scan_started_before
                before = await self._edge("desc", [
                    {"path": "created_at", "relation": "less_than", "values": [scan_started_before(started)]}])
                first = await self._edge("asc")
                # No event before the scan: replay the log from its start (retention is
                # checked on the next pass: if the oldest id is not 1 it was trimmed).
                start = before["id"] if before else (first["id"] - 1 if first else 0)
                await asyncio.to_thread(self._commit, start, await self._recent_gaps(start))
                log.info("event watcher starts after event %d (before the last full scan)", start)
            else:
                await self.rescan("no event position and no full scan recorded")
        else:
            await self.check_retention()

    async def check_retention(self) -> None:
        """Trap 4: if events after our position are gone from the log, only a rescan is exact."""
        if self.last_id is None:
            return
        first = await self._edge("asc")
        last = await self._edge("desc")
        if first is not None and self.last_id < first["id"] - 1:
            await self.rescan(f"event {self.last_id + 1} is no longer in the log (oldest is {first['id']})")
        elif self.last_id > 0 and (last is None or last["id"] < self.last_id):
            await self.rescan(f"the log ends at {last['id'] if last else 'nothing'}, before our "
                              f"position {self.last_id}: it looks truncated or reset")

    async def rescan(self, why: str) -> None:
        log.warning("event log: %s; falling back to a full rescan", why)
        self.stats["rescans"] += 1
        last = await self._edge("desc")
        start = last["id"] if last else 0
        gaps = await self._recent_gaps(start)
        await full_scan(self.upstream, self.store)
        await asyncio.to_thread(self._commit, start, gaps)
        log.warning("rescan done; following events after %d", start)

    async def _recent_gaps(self, start: int, window: int = 1000) -> dict[int, float]:
        """Ids up to `start` missing from the log now: they may still commit (trap 2), so
        they start in the backlog rather than being skipped with everything before `start`."""
        if start <= 0:
            return {}
        lo = max(0, start - window)
        seen: set[int] = set()
        after = lo
        while True:
            res = await self.upstream.call("read", {
                "type": ET, "return_fields": ["id"],
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "greater_than", "values": [after]},
                    {"path": "id", "relation": "less_than", "values": [start + 1]}]},
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": self.page_size, "current_page": 1},
                "return_only": "active", "return_paging_info_without_counts": True})
            ids = [e["id"] for e in res.get("entities") or []]
            seen.update(ids)
            if len(ids) < self.page_size:
                break
            after = ids[-1]
        now = time.time()
        return {i: now for i in range(lo + 1, start + 1) if i not in seen}

    def _commit(self, last_id: int, backlog: dict[int, float]) -> None:
        with self.store.engine.begin() as conn:
            self._save(conn, last_id, backlog)
        self.last_id, self.backlog = last_id, dict(backlog)

    # -- polling ----------------------------------------------------------------------------
    async def catch_up(self) -> int:
        """Poll until a batch comes back short, with no sleep between full batches.

        A three-stage pipeline: while one write runs, the next page's entities are being
        fetched and the page after it read. Writes stay in log order, each in its own
        transaction with the position it reaches; pages fetched while a write runs are
        merged into the next one (at most MERGE_EVENTS events), so a writer that falls
        behind catches up instead of queueing.
        """
        if self.last_id is None:
            await self.start()
        assert self.last_id is not None
        total = 0
        last_id, backlog = self.last_id, self._expire(dict(self.backlog), time.time())
        page: asyncio.Future[tuple[list[dict[str, Any]], bool]] = \
            asyncio.ensure_future(self._read_page(last_id, backlog))
        writing: asyncio.Future[None] | None = None
        pending: list[_Batch] = []
        try:
            while True:
                events, full = await page
                last_id, backlog = self._advance(events, last_id, backlog, time.time())
                if full:
                    page = asyncio.ensure_future(self._read_page(last_id, backlog))
                batch = await self._prepare(events, last_id, backlog)
                if batch is not None:
                    pending.append(batch)
                total += len(events)
                if writing is not None and (writing.done() or not full
                                            or sum(len(b.events) for b in pending) >= MERGE_EVENTS):
                    await writing
                    writing = None
                if writing is None and pending:
                    writing, pending = asyncio.ensure_future(self._write(pending)), []
                if not full:
                    if writing is not None:
                        await writing
                    return total
                backlog = self._expire(backlog, time.time())
        except BaseException:
            for fut in (page, writing):
                if fut is not None and not fut.done():
                    fut.cancel()
            raise

    async def poll_once(self) -> tuple[int, bool]:
        """Fetch and apply one batch; returns (events seen, whether the batch was full)."""
        if self.last_id is None:
            await self.start()
        assert self.last_id is not None
        backlog = self._expire(dict(self.backlog), time.time())
        events, full = await self._read_page(self.last_id, backlog)
        last_id, backlog = self._advance(events, self.last_id, backlog, time.time())
        await self._apply(events, last_id, backlog)
        return len(events), full

    def _expire(self, backlog: dict[int, float], now: float) -> dict[int, float]:
        for i, t in list(backlog.items()):
            if now - t > self.config.backlog_ttl:
                del backlog[i]
                self.stats["gaps_expired"] += 1
                log.info("event %d never appeared within %.0fs; giving up on it", i, self.config.backlog_ttl)
        return backlog

    async def _read_page(self, after: int, backlog: dict[int, float]) -> tuple[list[dict[str, Any]], bool]:
        """Events after `after` (one page), plus every backlog id that has appeared since.

        The whole backlog is asked for each time: ids that never fill (rolled back) pile up
        until they expire, and must not crowd out ids that are only late.
        """
        def query(cond: dict[str, Any], limit: int) -> Any:
            return self.upstream.call("read", {
                "type": ET, "return_fields": self.fields,
                "filters": {"logical_operator": "and", "conditions": [cond]},
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": limit, "current_page": 1},
                "return_only": "active", "return_paging_info_without_counts": True})

        waiting = sorted(backlog)
        calls = [query({"path": "id", "relation": "greater_than", "values": [after]}, self.page_size)]
        calls += [query({"path": "id", "relation": "in", "values": waiting[i:i + self.page_size]},
                        self.page_size) for i in range(0, len(waiting), self.page_size)]
        results = await asyncio.gather(*calls)
        page = [e for e in results[0].get("entities") or [] if isinstance(e.get("id"), int)]
        late = [e for r in results[1:] for e in r.get("entities") or [] if isinstance(e.get("id"), int)]
        # Late ids first (all below `after`), then the page: `_advance` relies on id order,
        # and "full" is judged on the page alone.
        return sorted(late, key=lambda e: e["id"]) + page, len(page) >= self.page_size

    def _advance(self, events: list[dict[str, Any]], last_id: int, backlog: dict[int, float],
                 now: float) -> tuple[int, dict[int, float]]:
        """The new position and backlog once these events are applied (pure bookkeeping)."""
        backlog = dict(backlog)
        for ev in events:
            i = ev["id"]
            if i in backlog:
                del backlog[i]
                self.stats["gaps_filled"] += 1
            elif i > last_id:
                for missing in range(last_id + 1, i):  # Trap 2: ids commit out of order
                    backlog.setdefault(missing, now)
                last_id = i
        return last_id, backlog

    async def _apply(self, events: list[dict[str, Any]], last_id: int, backlog: dict[int, float]) -> None:
        """Refresh what the events touched and save the position, in one transaction."""
        batch = await self._prepare(events, last_id, backlog)
        if batch is not None:
            await self._write([batch])

    async def _prepare(self, events: list[dict[str, Any]], last_id: int,
                       backlog: dict[int, float]) -> _Batch | None:
        """Fetch what the events touched; returns the batch to write (in log order), if any."""
        if not events and backlog == self.backlog and last_id == self.last_id:
            return None
        version = await asyncio.to_thread(self.store.now_version)
        plan = plan_events(events, self.store)
        if plan.revived:
            for etype, ids in plan.revived.items():
                for t, more in (await self.refresher.referencing(etype, ids)).items():
                    plan.touched.setdefault(t, set()).update(more)
        if plan.schema_changed:
            self.schema_changed = True
        fetched = await self.refresher.prepare(plan.touched, follow=False)
        return _Batch(events, fetched, version, plan.causes, last_id, dict(backlog))

    async def _write(self, batches: list[_Batch]) -> None:
        """Store consecutive batches in ONE transaction with the last one's position.

        An entity fetched for several keeps the latest record, with the version of the
        fetch that read it (each row its own: an older fetch's row must not claim a later
        start, nor a later one an earlier), so the version rule holds as if the batches
        had been written one by one; only their intermediate states are never shown.
        """
        last = batches[-1]
        events = [e for b in batches for e in b.events]
        fetched: Fetched = last.fetched
        versions: Versions | None = None
        causes = last.causes
        if len(batches) > 1:
            fetched, versions, causes = {}, {}, {}
            for b in batches:
                for t, got in b.fetched.items():
                    fetched.setdefault(t, {}).update(got)
                    versions.setdefault(t, {}).update(dict.fromkeys(got, b.version))
                for k, v in b.causes.items():
                    causes.setdefault(k, []).extend(v)
        extra = None
        if ET in self.store:
            extra = {ET: [event_row(e) for e in events]}
            if versions is not None:
                versions[ET] = {e["id"]: b.version for b in batches for e in b.events}
        last_id, backlog = last.last_id, last.backlog
        await self.refresher.commit(fetched, last.version, source="event", ref=str(last_id), event_id=last_id,
                                    extra=extra, in_txn=lambda conn: self._save(conn, last_id, backlog),
                                    details={k: {"events": v} for k, v in causes.items()}, versions=versions)
        self.last_id, self.backlog = last_id, backlog
        self.stats["events"] += len(events)
