"""Full scans: load every entity from the site into the store.

A full scan reads every active and retired entity of each cached type with keyset
paging by id and bulk upserts each page. Interval scans (what changed since) are
`interval_scan.Scanner`'s: they go through the versioned refresh path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..protocol.values import format_datetime, parse_datetime, utcnow
from ..store.tables import Store
from ..upstream import Upstream

log = logging.getLogger("sgcache.scan")

#: Re-read this much before the last scan's start, to absorb clock skew and slow commits.
SCAN_OVERLAP = dt.timedelta(seconds=60)

Progress = Callable[[str, int], None]


@dataclass
class ScanResult:
    kind: str
    started_at: str
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)


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


async def _load(upstream: Upstream, store: Store, entity_type: str, filters: dict[str, Any] | None,
                progress: Progress | None, page_size: int) -> int:
    fields = return_fields_for(store, entity_type)
    n = 0
    for return_only, active in (("active", True), ("retired", False)):
        async for page in upstream.read_pages(entity_type, fields, filters=filters,
                                              return_only=return_only, page_size=page_size):
            await asyncio.to_thread(_write_page, store, entity_type, page, active)
            n += len(page)
            if progress:
                progress(entity_type, len(page))
    return n


def _write_page(store: Store, entity_type: str, page: list[dict[str, Any]], active: bool) -> None:
    with store.engine.begin() as conn:
        store.upsert(conn, entity_type, page, active=active)


async def full_scan(upstream: Upstream, store: Store, types: Iterable[str] | None = None,
                    projects: list[int] | None = None, progress: Progress | None = None,
                    page_size: int = 500) -> ScanResult:
    """Load every active and retired entity of the given (default: all cached) types."""
    started = utcnow()
    t0 = time.monotonic()
    res = ScanResult("full", format_datetime(started))
    for etype in list(types or store.entities):
        if etype not in store:
            raise ValueError(f"{etype} is not a cached entity type")
        res.rows[etype] = await _load(upstream, store, etype, _project_filter(store, etype, projects),
                                      progress, page_size)
    res.seconds = time.monotonic() - t0
    # A project-restricted scan holds only part of each type: it primes nothing.
    await asyncio.to_thread(_record, store, res, started, [] if projects else list(res.rows))
    await asyncio.to_thread(analyze, store)
    log.info("full scan: %d rows in %.1fs", sum(res.rows.values()), res.seconds)
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


def _record(store: Store, res: ScanResult, started: dt.datetime, primed: list[str] | None = None) -> None:
    with store.engine.begin() as conn:
        done = set(store.get_state(conn, PRIMED) or []) | set(primed or [])
        if primed:
            store.set_state(conn, PRIMED, sorted(done))
        # Interval scans start from the oldest point every primed type is current at: a
        # full scan of some types must not skip changes to the others.
        covered_all = set(primed or []) >= set(store.entities)
        if res.kind != "full" or covered_all or store.get_state(conn, "scan_since") is None:
            store.set_state(conn, "scan_since", format_datetime(started))
        store.set_state(conn, f"last_{res.kind}_scan", {
            "started_at": res.started_at, "seconds": round(res.seconds, 3), "rows": res.rows})

def scan_started_before(started_at: str | None, overlap: dt.timedelta = SCAN_OVERLAP) -> str | None:
    """The wire time `overlap` before a recorded scan start (where replay must begin)."""
    if not started_at:
        return None
    t = parse_datetime(started_at)
    return format_datetime(t - overlap) if t else None
