"""Keeping the cache current: one refresh path shared by events, scans and write-through.

Every path ends in `Refresher.apply`: re-read the touched entities from the site
(active, then retired), follow link changes to the other side, and store the result in
one transaction. Rows carry the start time of the fetch that wrote them (`_version`,
from `Store.now_version`: the primary's clock on PostgreSQL, whatever host fetched), so a
slow, older fetch never overwrites a newer one whichever path it came from, and
re-applying anything (replay after a crash) is harmless.

`interval_scan.Scanner` and `loop.SyncLoop` build on this; `events.EventWatcher` feeds it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol.values import format_datetime, utcnow
from ..store.field_types import EntityField, MultiEntityField
from ..store.tables import Store
from ..upstream import Upstream
from .scan import return_fields_for

log = logging.getLogger("sgcache.sync")

WRITE_METHODS = frozenset({"create", "update", "delete", "revive", "batch"})
Touched = dict[str, set[int]]
#: type -> id -> (record, or None if the site shows it nowhere; active)
Fetched = dict[str, dict[int, tuple[dict[str, Any] | None, bool]]]
#: (type, id) -> what caused the refresh, stored with it in the audit log
Details = dict[tuple[str, int], dict[str, Any]]
#: type -> id -> the version of the fetch that read it (when not the batch's own)
Versions = dict[str, dict[int, int]]
#: How long audit log rows are kept.
LOG_RETENTION = dt.timedelta(days=7)
#: How many reads of the site one refresh runs at once.
FETCH_CONCURRENCY = 8
CHUNK = 500
#: Rounds of following changed links to the other side (each entity is fetched once).
MAX_FOLLOW = 4


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
        version = version or await asyncio.to_thread(self.store.now_version)
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
                     details: Details | None = None, versions: Versions | None = None) -> Applied:
        """The write half of `apply`: one transaction.

        `versions` (type -> id -> version) gives records fetched at other times than
        `version` their own: the event watcher writes several pages' fetches at once.
        """
        applied = Applied(version)
        await asyncio.to_thread(self._write, fetched, applied, source, ref, event_id, extra, in_txn,
                                details or {}, versions or {})
        return applied

    def _write(self, fetched: dict[str, dict[int, tuple[dict[str, Any] | None, bool]]], applied: Applied,
               source: str, ref: str, event_id: int | None, extra: dict[str, list[dict[str, Any]]] | None,
               in_txn: Callable[[Connection], None] | None, details: Details,
               versions: Versions) -> None:
        now = format_datetime(utcnow())
        log_rows: list[dict[str, Any]] = []
        with self.store.engine.begin() as conn:
            # Types and rows in one fixed order, so that concurrent writers (the leader and
            # write-through in any server) lock rows in the same order and cannot deadlock.
            for etype, got in sorted(fetched.items()):
                if etype not in self.store:
                    continue
                own = versions.get(etype)
                for active in (True, False):
                    recs = [r for _, (r, a) in sorted(got.items()) if r is not None and a is active]
                    if recs:
                        self.store.upsert(conn, etype, recs, active=active, version=applied.version,
                                          event_id=event_id, versions=own)
                gone: dict[int, list[int]] = {}
                for i, (r, _) in sorted(got.items()):
                    if r is None:
                        gone.setdefault((own or {}).get(i, applied.version), []).append(i)
                for v, ids in sorted(gone.items()):
                    self.store.delete_rows(conn, etype, ids, v)
                for eid, (rec, active) in got.items():
                    outcome = "gone" if rec is None else "active" if active else "retired"
                    setattr(applied, outcome, getattr(applied, outcome) + 1)
                    applied.entities.setdefault(etype, set()).add(eid)
                    log_rows.append({"at": now, "source": source, "ref": ref[:64], "entity_type": etype,
                                     "entity_id": eid, "outcome": outcome,
                                     "detail": json.dumps(details[(etype, eid)]) if (etype, eid) in details else None})
            for etype, recs in (extra or {}).items():
                if etype in self.store and recs:
                    self.store.upsert(conn, etype, recs, active=True, version=applied.version,
                                      versions=versions.get(etype))
            self.store.insert_rows(conn, self.store.log_table, log_rows)
            if in_txn is not None:
                in_txn(conn)
