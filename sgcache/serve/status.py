"""How fresh is the cache: a sampler of the shared state, `/status`, `/status.json`, `/readyz`.

Every serving process samples the database every few seconds (event position,
backlog, scans, rebuilds, rows per type). Only the sync leader's sampler asks the site
for the end of its event log, and records the answer in the database; every other
process (followers, `--no-sync` servers) reads it from there (if the leader is an
`sgcache events` process with no sampler, a syncing follower that finds the record
stale asks in its place). So any process behind
the balancer reports the lag of the one cache they all serve, and the site sees one
extra small read every few seconds however many processes run. With no leader
anywhere (every server `--no-sync`), the lag is unknown and `/readyz` of a `--no-sync`
process only requires a primed cache. Samples feed the Prometheus gauges and an in-memory ring buffer
(the last hour) that the status page plots; nothing is persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..logs import scrub
from ..protocol import errors
from ..protocol.values import parse_datetime
from ..runtime import CacheService
from ..sync.scan import PRIMED
from .metrics import Metrics

log = logging.getLogger("sgcache.status")

ET = "EventLogEntry"
#: Default lag (seconds) above which /readyz says not ready; `?max_lag=` overrides it.
READY_MAX_LAG = 120.0
#: State key where the sync leader's monitor records the site's end of the event log.
SITE_EVENTS = "site_events"
#: State key where the sync leader's monitor records the rows per type.
ROW_COUNTS = "row_counts"
#: Older than this (seconds), the leader's record of the site's log says nothing.
EDGES_MAX_AGE = 30.0
#: The site is asked for the end of its log at most this often (seconds), however often
#: the database is sampled: the status page must not eat the event watcher's budget.
SITE_EVERY = 4.0
#: At most this many points of history go to the page.
PLOT_POINTS = 360


@dataclass
class Sample:
    """One point of the status history."""

    t: float
    lag_seconds: float | None
    lag_ids: int | None
    backlog: int
    rate: float  # api3 requests per second since the previous sample
    served_rate: float
    passthrough_rate: float


@dataclass
class State:
    """What the last sample saw."""

    at: float = 0.0
    primed: bool = False
    last_event_id: int | None = None
    site_event_id: int | None = None
    lag_seconds: float | None = None
    lag_ids: int | None = None
    backlog: int = 0
    scans: dict[str, Any] = field(default_factory=dict)
    rebuilding: dict[str, Any] = field(default_factory=dict)
    last_rebuild: dict[str, Any] | None = None
    unprimed: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    site_ok: bool = True
    error: str | None = None


class Monitor:
    """Samples the cache's state on a timer; answers the status endpoints."""

    def __init__(self, service: CacheService, metrics: Metrics, *, interval: float | None = None,
                 history_seconds: float = 3600.0, rows_every: float = 30.0) -> None:
        self.service = service
        self.metrics = metrics
        # About as often as the sync polls the site, within 1-5 s.
        self.interval = interval or min(5.0, max(1.0, 2 * service.config.poll_interval))
        self.site_every = max(self.interval, SITE_EVERY)
        self.rows_every = rows_every
        self.history: deque[Sample] = deque(maxlen=max(2, int(history_seconds / self.interval)))
        self.state = State()
        self.sync: Any = None  # the SyncLoop, when this process runs one (set by the server)
        self.shadow: Any = None  # the shadow verifier (serve/shadow.py), set by the app
        self.permissions: Any = None  # what each permission group sees (serve/permissions.py), set by the app
        self._rows_at = 0.0
        self._last_totals = (time.monotonic(), 0, 0, 0)
        self._lock = asyncio.Lock()
        self.started = time.time()

    # -- sampling -----------------------------------------------------------------------
    def _read_db(self, with_rows: bool) -> dict[str, Any]:
        store = self.service.store
        out: dict[str, Any] = {}
        with store.engine.connect() as conn:
            out["last_event_id"] = store.get_state(conn, "last_event_id")
            out["backlog"] = store.get_state(conn, "event_backlog") or {}
            out["scans"] = {k: store.get_state(conn, f"last_{k}_scan") for k in ("full", "interval")}
            out["rebuilding"] = store.get_state(conn, "rebuilding") or {}
            out["site_events"] = store.get_state(conn, SITE_EVENTS)
            out["last_rebuild"] = store.get_state(conn, "last_rebuild")
            out["primed"] = store.get_state(conn, PRIMED) or []
            out["rows"] = None
            if with_rows:
                out["rows"] = {t: store.counts(conn, t) for t in store.entities}
                if self.is_leader:
                    with store.engine.begin() as wconn:
                        store.set_state(wconn, ROW_COUNTS, out["rows"])
            elif self.sync is not None and not self.is_leader:
                out["rows"] = store.get_state(conn, ROW_COUNTS)
        return out

    async def _site_edges(self, after: int | None) -> tuple[int | None, str | None]:
        """(the site's newest event id, created_at of the first event after `after`)."""
        async def edge(direction: str, conds: list[dict[str, Any]]) -> dict[str, Any] | None:
            res = await self.service.upstream.call("read", {
                "type": ET, "return_fields": ["id", "created_at"],
                "filters": {"logical_operator": "and", "conditions": conds},
                "sorts": [{"field_name": "id", "direction": direction}],
                "paging": {"entities_per_page": 1, "current_page": 1},
                "return_only": "active", "return_paging_info_without_counts": True})
            ents = res.get("entities") or []
            return ents[0] if ents else None
        newest = await edge("desc", [])
        if newest is None:
            return None, None
        if after is None or newest["id"] <= after:
            return newest["id"], None
        first = await edge("asc", [{"path": "id", "relation": "greater_than", "values": [after]}])
        return newest["id"], (first or {}).get("created_at")

    async def sample(self) -> State:
        async with self._lock:
            now = time.time()
            # Counting every table is the one costly query: only the leader (or a server
            # with no sync at all) counts, and followers read the leader's last counts.
            with_rows = now - self._rows_at >= self.rows_every and (self.is_leader or self.sync is None)
            st = State(at=now, rows=self.state.rows)
            try:
                db = await asyncio.to_thread(self._read_db, with_rows)
            except Exception as e:
                self.metrics.sample_errors.inc()
                st.error = scrub(f"database: {type(e).__name__}: {e}")[:300]  # shown on the page
                self.state = st
                return st
            if with_rows:
                self._rows_at = now
            if isinstance(db["rows"], dict):
                st.rows = db["rows"]
            st.last_event_id = db["last_event_id"]
            st.backlog = len(db["backlog"])
            st.scans = {k: v for k, v in db["scans"].items() if v}
            st.rebuilding = db["rebuilding"]
            st.last_rebuild = db["last_rebuild"]
            # Served locally: the types whose full scan (or rebuild) completed.
            st.primed = bool(db["primed"])
            st.unprimed = sorted(set(self.service.store.entities) - set(db["primed"]))
            edges = db["site_events"] if isinstance(db["site_events"], dict) else {}
            age = now - float(edges.get("sampled_at") or 0)
            stale = age > 2 * self.site_every + random.uniform(0, self.site_every)
            # The leader asks the site; everyone else reads its answer from the database. When
            # the leader does not serve (`sgcache events` leads), a syncing follower that finds
            # the answer stale asks in its place: still about one site read per interval.
            if (self.is_leader and age >= self.site_every) or (self.sync is not None and stale):
                try:
                    newest, first_pending = await self._site_edges(st.last_event_id)
                    edges = {"newest_id": newest, "first_pending_at": first_pending,
                             "after": st.last_event_id, "sampled_at": now}
                    await asyncio.to_thread(self._write_edges, edges)
                except errors.Fault as e:
                    st.site_ok = False
                    st.error = scrub(f"site: {e.message}")[:300]
                    self.metrics.sample_errors.inc()
                    edges = {}
            elif self.is_leader:  # not asked this time: the last answer's verdict stands
                st.site_ok = self.state.site_ok
                if not st.site_ok:
                    st.error = st.error or self.state.error
            if edges and now - float(edges.get("sampled_at") or 0) <= EDGES_MAX_AGE:
                self._lag_from(st, edges, now)
            elif not st.site_ok:  # the site is down: keep the last known lag
                st.lag_seconds, st.lag_ids = self.state.lag_seconds, self.state.lag_ids
            self.state = st
            self._publish(st)
            return st

    @staticmethod
    def _lag_from(st: State, edges: dict[str, Any], now: float) -> None:
        st.site_event_id = edges.get("newest_id")
        if st.last_event_id is None:
            return
        st.lag_ids = max(0, (st.site_event_id or 0) - st.last_event_id)
        first = edges.get("first_pending_at") if st.lag_ids else None
        pending_at = parse_datetime(first) if first else None
        st.lag_seconds = max(0.0, now - pending_at.timestamp()) if pending_at else 0.0

    def _write_edges(self, edges: dict[str, Any]) -> None:
        store = self.service.store
        with store.engine.begin() as conn:
            store.set_state(conn, SITE_EVENTS, edges)

    def _publish(self, st: State) -> None:
        m = self.metrics
        m.sync_upstream()  # keeps this worker's share current even if no scrape reaches it
        if st.lag_seconds is not None:
            m.event_lag_seconds.set(st.lag_seconds)
        if st.lag_ids is not None:
            m.event_lag_ids.set(st.lag_ids)
        if st.last_event_id is not None:
            m.last_event_id.set(st.last_event_id)
        if st.site_event_id is not None:
            m.site_event_id.set(st.site_event_id)
        m.backlog.set(st.backlog)
        for kind, scan in st.scans.items():
            started = parse_datetime(scan.get("started_at")) if scan.get("started_at") else None
            if started:
                m.scan_time.labels(kind).set(started.timestamp())
            m.scan_seconds.labels(kind).set(float(scan.get("seconds") or 0))
        for etype, counts in st.rows.items():
            for state, n in counts.items():
                m.rows.labels(etype, state).set(n)
        for etype in self.service.store.entities:
            m.rebuilding.labels(etype).set(1 if etype in st.rebuilding else 0)
        m.leader.set(1 if self.is_leader else 0)
        for r in (self.replicas() or {}).get("replicas", []):
            m.replica_in_use.labels(r["name"]).set(1 if r["in_use"] else 0)
            m.replica_lag_seconds.labels(r["name"]).set(r["lag_seconds"] if r["lag_seconds"] is not None else -1)
            m.replica_lag_events.labels(r["name"]).set(r["lag_events"] if r["lag_events"] is not None else -1)
        m.ready.set(1 if self.readiness(READY_MAX_LAG)[0] else 0)
        t_prev, total_prev, served_prev, passed_prev = self._last_totals
        t_now = time.monotonic()
        dt = max(t_now - t_prev, 1e-6)
        self.history.append(Sample(st.at, st.lag_seconds, st.lag_ids, st.backlog,
                                   round((m.total - total_prev) / dt, 3), round((m.served - served_prev) / dt, 3),
                                   round((m.passed - passed_prev) / dt, 3)))
        self._last_totals = (t_now, m.total, m.served, m.passed)

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.sample_errors.inc()
                log.exception("status sample failed")
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- answers ------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return bool(getattr(self.sync, "is_leader", False))

    def readiness(self, max_lag: float) -> tuple[bool, list[str]]:
        """Primed, and the sync no further behind than `max_lag` seconds."""
        st = self.state
        why: list[str] = []
        if not st.at:
            why.append("no state sampled yet")
        if not st.primed:
            why.append("no type primed by a full scan yet")
        if self.sync is None and st.lag_seconds is None:
            pass  # `--no-sync` and no leader anywhere: freshness is someone else's job
        elif st.last_event_id is None:
            why.append("no event position yet")
        elif st.lag_seconds is None:
            why.append("lag unknown")
        elif st.lag_seconds > max_lag:
            why.append(f"event lag {st.lag_seconds:.0f}s above {max_lag:.0f}s")
        if st.error and st.error.startswith("database"):
            why.append(st.error)
        return not why, why

    def replicas(self) -> dict[str, Any] | None:
        """Each read replica's lag, in seconds and in the sync leader's events (reads fall
        back to the primary, so a replica left out does not make this process unready)."""
        replicas = getattr(self.service, "replicas", None)
        return replicas.snapshot() if replicas is not None else None

    def snapshot(self) -> dict[str, Any]:
        st = self.state
        cfg = self.service.config
        m = self.metrics
        ready, why = self.readiness(READY_MAX_LAG)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "site": cfg.public_shotgun_url,  # never the credentials a proxy set-up puts in it
            "now": time.time(),
            "started": self.started,
            "ready": ready,
            "not_ready": why,
            "leader": self.is_leader,
            "state": asdict(st),
            "requests": {"total": m.total, "served": m.served, "passthrough": m.passed},
            "recent_passthrough": [asdict(n) for n in reversed(m.recent)],
            "history": [asdict(s) for s in _thin(list(self.history), PLOT_POINTS)],
            "shadow": self.shadow.snapshot() if self.shadow is not None else None,  # mismatches, quarantines
            "permissions": self.permissions.describe() if self.permissions is not None else None,
            "replicas": self.replicas(),
            "interval": self.interval,
        }

    def routes(self) -> list[Route]:
        page = resources.files("sgcache.serve").joinpath("static/status.html").read_text(encoding="utf-8")

        async def status_page(request: Request) -> Response:
            if not self.state.at:
                await self.sample()
            data = json.dumps(self.snapshot(), default=str).replace("</", "<\\/")
            return HTMLResponse(page.replace("__SNAPSHOT__", data), headers={"cache-control": "no-store"})

        async def status_json(request: Request) -> Response:
            if not self.state.at:
                await self.sample()
            if self.shadow is not None:  # an operator who just cleared a quarantine sees it gone
                await self.shadow.refresh()
            return JSONResponse(self.snapshot(), headers={"cache-control": "no-store"})

        async def readyz(request: Request) -> Response:
            try:
                max_lag = float(request.query_params.get("max_lag", READY_MAX_LAG))
            except ValueError:
                max_lag = READY_MAX_LAG
            if not self.state.at or time.time() - self.state.at > 3 * self.interval:
                await self.sample()
            ready, why = self.readiness(max_lag)
            body = "ready\n" if ready else "not ready: " + "; ".join(why) + "\n"
            body += "".join(_replica_line(r) for r in (self.replicas() or {}).get("replicas", []))
            return Response(body, status_code=200 if ready else 503, media_type="text/plain")

        return [Route("/status", status_page, methods=["GET"]),
                Route("/status.json", status_json, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"])]


def _replica_line(r: dict[str, Any]) -> str:
    lag = "unknown" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}s"
    events = "unknown" if r["lag_events"] is None else str(r["lag_events"])
    state = "in use" if r["in_use"] else f"left out ({r['error']})"
    return f"replica {r['name']}: lag {lag}, {events} events behind; {state}\n"


def _thin(points: list[Any], n: int) -> list[Any]:
    """At most about n points, evenly spaced, always keeping the newest."""
    step = max(1, -(-len(points) // n))
    return points[::-1][::step][::-1]
