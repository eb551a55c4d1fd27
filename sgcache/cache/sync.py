"""Keeping the cache current: interval scans and write-through of passthrough writes.

Write-through re-reads each written entity from the site (active or retired) with the
cache's own credentials and stores it before the caller's response returns, so the
caller reads its own writes from the cache at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Iterable

from ..protocol import errors
from .scan import interval_scan, return_fields_for
from .service import CacheService

log = logging.getLogger("sgcache.sync")

WRITE_METHODS = frozenset({"create", "update", "delete", "revive", "batch"})


class SyncLoop:
    def __init__(self, service: CacheService) -> None:
        self.svc = service
        self.store = service.store
        self.upstream = service.upstream
        self.config = service.config
        self._wake = asyncio.Event()
        self.last_scan: float | None = None

    # -- background loop ---------------------------------------------------------------
    async def run(self) -> None:
        next_scan = time.monotonic() + self.config.scan_interval
        while True:
            try:
                if time.monotonic() >= next_scan:
                    await interval_scan(self.upstream, self.store)
                    self.last_scan = time.time()
                    next_scan = time.monotonic() + self.config.scan_interval
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep syncing whatever one pass hit
                log.warning("sync pass failed: %s", e)
                await asyncio.sleep(min(self.config.poll_interval * 5, 30))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    # -- refresh -------------------------------------------------------------------------
    async def refresh(self, entity_type: str, ids: Iterable[int]) -> None:
        """Re-read entities from the site (whatever their state) and store them."""
        ids = sorted({int(i) for i in ids})
        if entity_type not in self.store or not ids:
            return
        fields = return_fields_for(self.store, entity_type)
        found: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for return_only, active in (("active", True), ("retired", False)):
            for i in range(0, len(ids), 500):
                res = await self.upstream.call("read", {
                    "type": entity_type, "return_fields": fields,
                    "filters": {"logical_operator": "and", "conditions": [
                        {"path": "id", "relation": "in", "values": ids[i:i + 500]}]},
                    "return_only": return_only,
                    "paging": {"entities_per_page": 500, "current_page": 1},
                    "return_paging_info_without_counts": False})
                found[active].extend(res.get("entities") or [])

        def write() -> None:
            with self.store.engine.begin() as conn:
                if found[True]:
                    self.store.upsert(conn, entity_type, found[True], active=True)
                if found[False]:
                    self.store.upsert(conn, entity_type, found[False], active=False)
        await asyncio.to_thread(write)

    # -- write-through ---------------------------------------------------------------------
    async def on_write(self, method: str, params: list[Any], body: bytes) -> None:
        """Apply the result of a passthrough write; never fails the caller's request."""
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
            touched: dict[str, set[int]] = {}
            spawned: list[tuple[str, int]] = []
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
                if isinstance(etype, str) and isinstance(eid, int):
                    touched.setdefault(etype, set()).add(eid)
            for etype, ids in touched.items():
                await self.refresh(etype, ids)
            for etype, eid in spawned:
                await self._refresh_spawned_tasks(etype, eid)
        except errors.Fault as e:
            log.warning("write-through of %s could not re-read from the site: %s", method, e.message)
        except Exception:
            log.exception("write-through of %s failed", method)

    async def _refresh_spawned_tasks(self, entity_type: str, entity_id: int) -> None:
        """A task template spawns Tasks on the site; bring them in with their parent."""
        if "Task" not in self.store or "entity" not in self.store["Task"].fields:
            return
        res = await self.upstream.call("read", {
            "type": "Task", "return_fields": ["id"],
            "filters": {"logical_operator": "and", "conditions": [
                {"path": "entity", "relation": "is", "values": [{"type": entity_type, "id": entity_id}]}]},
            "return_only": "active", "paging": {"entities_per_page": 500, "current_page": 1},
            "return_paging_info_without_counts": False})
        await self.refresh("Task", [e["id"] for e in res.get("entities") or []])
