"""Interval scans: what changed since the last scan, by `updated_at`, plus the retired set.

Scripts whose writes generate no events are caught here; their retirements may not move
`updated_at`, so each scan also compares the site's retired ids with the cache's.
Everything goes through the versioned refresh path (`refresh.Refresher`), which also
refreshes the other side of changed links. The one interval scan: the sync leader runs
it periodically and `sgcache scan` runs it on demand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol.values import format_datetime, parse_datetime, utcnow
from ..store.tables import Store, active_is
from ..upstream import Upstream
from .refresh import LOG_RETENTION, Refresher, Touched, merge
from .scan import SCAN_OVERLAP, Progress, ScanResult, full_scan, return_fields_for

log = logging.getLogger("sgcache.sync")


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
        """One scan; rows refreshed per type (for the leader's poll answer)."""
        return (await self.run()).rows

    async def run(self, progress: Progress | None = None) -> ScanResult:
        """What changed since the last scan; a full scan if there never was one."""
        started = utcnow()
        t0 = time.monotonic()
        since_text = await asyncio.to_thread(self._state, "scan_since")
        if since_text is None:
            return await full_scan(self.upstream, self.store, progress=progress, page_size=self.page_size)
        since = parse_datetime(since_text)
        assert since is not None
        cutoff = format_datetime(since - SCAN_OVERLAP)
        rows: dict[str, int] = {}
        for etype in self.store.entities:
            if etype == "EventLogEntry":
                continue
            n = 0
            if "updated_at" in self.store[etype].fields:
                n += await self._changed_since(etype, cutoff, progress)
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
        return ScanResult("interval", format_datetime(started), seconds, rows)

    def _in_txn(self, fn: Callable[[Connection], None]) -> None:
        with self.store.engine.begin() as conn:
            fn(conn)

    async def _changed_since(self, etype: str, cutoff: str, progress: Progress | None = None) -> int:
        fields = return_fields_for(self.store, etype)
        f = {"logical_operator": "and", "conditions": [
            {"path": "updated_at", "relation": "greater_than", "values": [cutoff]}]}
        n = 0
        for return_only, active in (("active", True), ("retired", False)):
            version = await asyncio.to_thread(self.store.now_version)
            async for page in self.upstream.read_pages(etype, fields, filters=f, return_only=return_only,
                                                       page_size=self.page_size):
                pre = {etype: {r["id"]: (r, active) for r in page}}
                await self.refresher.apply({}, source="scan", ref="interval", prefetched=pre, version=version)
                n += len(page)
                if progress:
                    progress(etype, len(page))
                version = await asyncio.to_thread(self.store.now_version)
        return n

    async def _reconcile_retired(self, etype: str) -> int:
        """Refresh ids whose retired state differs between the site and the cache."""
        site: set[int] = set()
        async for page in self.upstream.read_pages(etype, ["id"], return_only="retired", page_size=self.page_size):
            site.update(r["id"] for r in page)

        def ours() -> set[int]:
            t = self.store[etype].table
            with self.store.engine.connect() as conn:
                return set(conn.execute(select(t.c.id).where(active_is(t, False))).scalars())
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
