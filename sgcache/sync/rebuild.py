"""Live rebuild: re-import entity types from the site while every server keeps serving.

The rebuild marks its types in the database (`_sgcache_state["rebuilding"]`), waits a
grace period so every serving process has seen the mark and in-flight reads have
finished, then re-reads the types from the site with the full scan's machinery (in
parallel, keyset paged, versioned upserts so a newer event refresh always wins,
resumable) and deletes the rows the site no longer has as each type completes. While a type is marked, reads that involve it in any way (as
the read's type, a link target whose name is shown, or a hop of a deep path) are
passed through to the site (`RebuildGate`); nothing is ever served half-rebuilt.

A rebuild that fails leaves its types marked (safe: they are passed through) and says
so on the status page; run it again, or `sgcache rebuild --clear TYPES`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from ..protocol.values import format_datetime, utcnow
from ..read.engine import Passthrough
from ..schema import Schema
from ..store.tables import VERSION, Store
from ..upstream import Upstream
from .scan import DEFAULT_CONCURRENCY, PRIMED, ParallelScan
from .scan_plan import TypePlan

log = logging.getLogger("sgcache.rebuild")

REBUILDING = "rebuilding"
LAST_REBUILD = "last_rebuild"
#: How stale a server's view of the rebuild marks may be (seconds).
READINESS_TTL = 0.5
#: How long a rebuild waits after marking before it touches any row (seconds).
DEFAULT_GRACE = 2.0


# -- the serving side ----------------------------------------------------------------------

class Readiness:
    """Which types are being rebuilt, as the database says; re-read at most every `ttl` s."""

    def __init__(self, store: Store, ttl: float = READINESS_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._busy: frozenset[str] = frozenset()
        self._unprimed: frozenset[str] = frozenset(store.entities)
        self._at = -1e9
        self._lock = threading.Lock()

    def rebuilding(self) -> frozenset[str]:
        self._refresh()
        return self._busy

    def unprimed(self) -> frozenset[str]:
        """Types whose full scan never completed: an empty table is not an answer."""
        self._refresh()
        return self._unprimed

    def fresh(self) -> bool:
        """True while the marks need no re-read (callers on the event loop check this)."""
        return self.clock() - self._at < self.ttl

    def _refresh(self) -> None:
        if self.clock() - self._at < self.ttl:
            return
        with self._lock:
            if self.clock() - self._at >= self.ttl:
                try:
                    with self.store.engine.connect() as conn:
                        marks = self.store.get_state(conn, REBUILDING) or {}
                        primed = self.store.get_state(conn, PRIMED) or []
                    self._busy = frozenset(marks)
                    self._unprimed = frozenset(self.store.entities) - frozenset(primed)
                except Exception:  # keep the last answer; the read itself will report the database
                    log.warning("could not read rebuild marks", exc_info=True)
                self._at = self.clock()

    def is_ready(self, entity_type: str, field_name: str) -> bool:
        return entity_type not in self.rebuilding() and entity_type not in self.unprimed()


def involved_types(schema: Schema, params: dict[str, Any]) -> set[str]:
    """Every type a read may touch: its own, each link's targets, each hop of a deep path."""
    root = params.get("type")
    out: set[str] = {root} if isinstance(root, str) else set()
    if not isinstance(root, str) or root not in schema:
        return out
    paths: list[Any] = list(params.get("return_fields") or [])
    paths += [s.get("field_name") or s.get("column") for s in params.get("sorts") or [] if isinstance(s, dict)]
    stack = [params.get("filters")]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("path"), str):
                paths.append(node["path"])
            stack.extend(node.get("conditions") or node.get("filters") or [])
        elif isinstance(node, list):
            if node and isinstance(node[0], str):
                paths.append(node[0])
            else:
                stack.extend(node)
    if params.get("include_archived_projects") is False:
        out.add("Project")
    for path in paths:
        if not isinstance(path, str):
            continue
        parts = path.split(".")
        cur = root
        for i, name in enumerate(parts):
            if i % 2 == 1:  # a type hop
                out.add(name)
                cur = name
                continue
            fs = schema.get_field(cur, name) if cur in schema else None
            if fs is not None and fs.is_link:
                out.update(fs.valid_types)
    return out


class RebuildGate:
    """Raises Passthrough for a read or summarize that involves a type being rebuilt.

    The server calls it before the read engine (whichever engine is current: schema
    changes replace it), so the gate survives engine swaps.
    """

    def __init__(self, readiness: Readiness, schema: Callable[[], Schema]) -> None:
        self.readiness = readiness
        self.schema = schema

    def fresh(self) -> bool:
        """True if calling the gate now will not touch the database."""
        return self.readiness.fresh()

    def __call__(self, params: Any) -> None:
        busy = self.readiness.rebuilding()
        unprimed = self.readiness.unprimed()
        if (busy or unprimed) and isinstance(params, dict):
            involved = involved_types(self.schema(), params)
            hit = involved & busy
            if hit:
                raise Passthrough(f"entity type {', '.join(sorted(hit))} is being rebuilt")
            hit = involved & unprimed
            if hit:
                raise Passthrough(f"entity type {', '.join(sorted(hit))} is not primed by a full scan yet")


# -- the rebuilding side ---------------------------------------------------------------------

@dataclass
class RebuildResult:
    types: list[str]
    started_at: str
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)


def mark_rebuilding(store: Store, types: list[str], phase: str, *, clear: bool = False) -> None:
    """Record (or with `clear`, remove) rebuild marks; servers pass these types' reads through."""
    with store.engine.begin() as conn:
        marks = dict(store.get_state(conn, REBUILDING) or {})
        for t in types:
            if clear:
                marks.pop(t, None)
            else:
                marks[t] = {"phase": phase, "since": format_datetime(utcnow()),
                            "by": f"{socket.gethostname()}:{os.getpid()}"}
        store.set_state(conn, REBUILDING, marks)


def clear_marks(store: Store, types: Iterable[str]) -> None:
    """Serve these types locally again (after a failed rebuild someone has checked)."""
    mark_rebuilding(store, list(types), "", clear=True)


def rebuilding(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return dict(store.get_state(conn, REBUILDING) or {})


def _sweeper(store: Store) -> Callable[[Connection, TypePlan], None]:
    """Run when a type's re-read completes (in its last page's transaction): delete the rows
    the site did not show. Every row the rebuild wrote carries a version at or after the
    type's start, and so does anything newer written meanwhile; the rest were not seen."""
    def sweep(conn: Connection, plan: TypePlan) -> None:
        t = store[plan.etype].table
        stale = list(conn.execute(select(t.c.id).where(
            or_(t.c[VERSION].is_(None), t.c[VERSION] < plan.version))).scalars())
        plan.removed += store.delete_rows(conn, plan.etype, stale, plan.version - 1)
        store.drop_orphan_links(conn, plan.etype)
    return sweep


async def rebuild(store: Store, upstream: Upstream, types: Iterable[str], *, grace: float = DEFAULT_GRACE,
                  page_size: int | None = None, progress: Callable[[str, int], None] | None = None,
                  concurrency: int = DEFAULT_CONCURRENCY) -> RebuildResult:
    """Re-import `types` from the site; reads involving them go to the site meanwhile.

    The types are read together by the full scan's machinery (`scan.ParallelScan`, kind
    "rebuild"): a rebuild killed part way, run again, resumes from its committed pages.
    """
    wanted = list(dict.fromkeys(types))
    for t in wanted:
        if t not in store:
            raise ValueError(f"{t} is not a cached entity type")
    res = RebuildResult(wanted, format_datetime(utcnow()))
    t0 = time.monotonic()
    await asyncio.to_thread(mark_rebuilding, store, wanted, "waiting for readers")
    log.info("rebuild of %s: marked; waiting %.1fs for servers to pass their reads through", wanted, grace)
    await asyncio.sleep(grace)
    done: list[str] = []
    scan = ParallelScan(upstream, store, "rebuild", concurrency=concurrency, page_size=page_size,
                        progress=progress, type_done=_sweeper(store))
    try:
        await asyncio.to_thread(mark_rebuilding, store, wanted, "loading")
        await scan.prepare(wanted, None, resume=True)
        if scan.resumed:
            res.started_at = format_datetime(scan.started_at)
        await scan.run()
        done.extend(wanted)
        for etype in wanted:
            res.rows[etype], res.removed[etype] = scan.plans[etype].rows, scan.plans[etype].removed
    except BaseException as e:
        done.extend(t for t in wanted if t in scan.plans and scan.plans[t].done)
        await asyncio.to_thread(mark_rebuilding, store, [t for t in wanted if t not in done],
                                f"failed: {type(e).__name__}: {e}"[:200])
        if done:
            await asyncio.to_thread(mark_rebuilding, store, done, "", clear=True)
        raise
    res.seconds = time.monotonic() - t0

    def finish() -> None:
        with store.engine.begin() as conn:
            marks = dict(store.get_state(conn, REBUILDING) or {})
            for t in wanted:
                marks.pop(t, None)
            store.set_state(conn, REBUILDING, marks)
            # A whole type re-read from the site is as good as a full scan of it.
            store.set_state(conn, PRIMED, sorted(set(store.get_state(conn, PRIMED) or []) | set(wanted)))
            store.set_state(conn, LAST_REBUILD, {"types": wanted, "started_at": res.started_at,
                                                 "seconds": round(res.seconds, 3), "rows": res.rows,
                                                 "removed": res.removed})
            scan.forget(conn)
    await asyncio.to_thread(finish)
    log.info("rebuild of %s done: %d rows, %d removed, %.1fs", wanted, sum(res.rows.values()),
             sum(res.removed.values()), res.seconds)
    return res
