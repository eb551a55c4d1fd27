"""Prove the cache right: compare it with the site, type by type, and repair what differs.

Two checks, both usable from cron and CI (the CLI exits non-zero on a mismatch):

* `validate_counts` compares which ids each type has, active and retired, and lists
  the missing, extra and wrong-state ids;
* `validate_data` compares field values entity by entity, reading the cache through
  the read engine exactly as a client would be served.

Differences that events not yet applied explain are reported as *in flight*, not as
mismatches: the site's events after the cache's position are read and the entities
they name excused, and what still differs is re-checked once after a short settle.
Repair goes through the same refresh path as events and scans (`Refresher.apply`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import select

from ..read.engine import Passthrough, ReadEngine
from ..store import quarantine
from ..store.tables import ACTIVE, Store
from ..upstream import Upstream
from .scan import return_fields_for

log = logging.getLogger("sgcache.validate")

ET = "EventLogEntry"
PAGE = 500
#: At most this many pending events are read to excuse differences as in flight.
MAX_PENDING = 50_000


# -- reports ------------------------------------------------------------------------------

@dataclass
class CountReport:
    """One type's ids on the site and in the cache, and how they differ."""

    entity_type: str
    site: dict[str, int] = field(default_factory=dict)  # active / retired counts
    cache: dict[str, int] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)  # on the site, not in the cache
    extra: list[int] = field(default_factory=list)  # in the cache, not on the site
    wrong_state: list[int] = field(default_factory=list)  # active on one side, retired on the other
    in_flight: list[int] = field(default_factory=list)  # differences that pending events explain
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.wrong_state)

    def differing(self) -> set[int]:
        return set(self.missing) | set(self.extra) | set(self.wrong_state)

    def to_json(self) -> dict[str, Any]:
        return {"entity_type": self.entity_type, "ok": self.ok, "site": self.site, "cache": self.cache,
                "missing": self.missing, "extra": self.extra, "wrong_state": self.wrong_state,
                "in_flight": self.in_flight, "repaired": self.repaired}


@dataclass
class FieldDiff:
    entity_id: int
    field: str
    site: Any
    cache: Any


@dataclass
class DataReport:
    """One type's field-by-field comparison over the selected entities."""

    entity_type: str
    compared: int = 0
    fields: list[str] = field(default_factory=list)
    skipped_fields: dict[str, str] = field(default_factory=dict)  # field -> why not served locally
    withheld: dict[str, list[int]] = field(default_factory=dict)  # field -> ids whose value the cache withholds
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    diffs: list[FieldDiff] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    repaired: int = 0
    quarantines_cleared: int = 0  # shadow quarantines lifted because the type validated clean

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.diffs)

    def differing(self) -> set[int]:
        return set(self.missing) | set(self.extra) | {d.entity_id for d in self.diffs}

    def to_json(self) -> dict[str, Any]:
        return {"entity_type": self.entity_type, "ok": self.ok, "compared": self.compared,
                "fields": self.fields, "skipped_fields": self.skipped_fields,
                "missing": self.missing, "extra": self.extra, "in_flight": self.in_flight,
                "diffs": [{"id": d.entity_id, "field": d.field, "site": d.site, "cache": d.cache}
                          for d in self.diffs],
                "withheld": self.withheld,
                "repaired": self.repaired, "quarantines_cleared": self.quarantines_cleared}


# -- shared helpers ---------------------------------------------------------------------------

def _norm(value: Any) -> Any:
    """Compare values as the wire carries them."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _by_id(ids: Iterable[int]) -> dict[str, Any]:
    return {"logical_operator": "and", "conditions": [{"path": "id", "relation": "in", "values": list(ids)}]}


def wire_filters(filters: Any) -> dict[str, Any] | None:
    """Accept the wire's filter dict or shotgun_api3's list form (`[["code", "is", "x"]]`)."""
    if filters is None or filters == []:
        return None
    if isinstance(filters, dict):
        if "filters" in filters and "conditions" not in filters:  # shotgun_api3 complex form
            return {"logical_operator": "or" if filters.get("filter_operator") == "any" else "and",
                    "conditions": [_wire_cond(c) for c in filters["filters"]]}
        return filters
    if isinstance(filters, list):
        return {"logical_operator": "and", "conditions": [_wire_cond(c) for c in filters]}
    raise ValueError("filters must be a JSON list or object")


def _wire_cond(c: Any) -> dict[str, Any]:
    if isinstance(c, dict):
        return wire_filters(c) or {"logical_operator": "and", "conditions": []}
    if not isinstance(c, list) or len(c) < 2:
        raise ValueError(f"bad filter {c!r}")
    values = c[2:]
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    return {"path": c[0], "relation": c[1], "values": values}


async def _site_ids(upstream: Upstream, etype: str, return_only: str) -> set[int]:
    ids: set[int] = set()
    async for page in upstream.read_pages(etype, ["id"], return_only=return_only, page_size=PAGE):
        ids.update(r["id"] for r in page)
    return ids


def _cache_ids(store: Store, etype: str) -> tuple[set[int], set[int]]:
    t = store[etype].table
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.id, t.c[ACTIVE])).all()
    return {i for i, a in rows if a}, {i for i, a in rows if not a}


def _cache_position(store: Store) -> tuple[int | None, list[int]]:
    with store.engine.connect() as conn:
        last = store.get_state(conn, "last_event_id")
        backlog = store.get_state(conn, "event_backlog") or {}
    return last, sorted(int(k) for k in backlog)


async def pending_entities(store: Store, upstream: Upstream, since: int | None,
                           backlog: list[int] | None = None, max_events: int = MAX_PENDING) -> dict[str, set[int]]:
    """Entities named by site events the cache has not applied yet (after `since`, or in its backlog).

    Reads at most `max_events` events: a cache that far behind has a lag problem that
    the status page shows, and differences beyond that are reported, not excused.
    """
    out: dict[str, set[int]] = {}
    if since is None:
        return out
    seen = 0
    conds: list[dict[str, Any]] = [{"path": "id", "relation": "greater_than", "values": [since]}]
    if backlog:
        conds.append({"path": "id", "relation": "in", "values": backlog})
    f = {"logical_operator": "or", "conditions": conds}
    async for page in upstream.read_pages(ET, ["id", "event_type", "entity", "meta"], filters=f, page_size=PAGE):
        for ev in page:
            meta: dict[str, Any] = ev["meta"] if isinstance(ev.get("meta"), dict) else {}
            ent: dict[str, Any] = ev["entity"] if isinstance(ev.get("entity"), dict) else {}
            etype = meta.get("entity_type") or ent.get("type")
            eid = meta.get("entity_id") or ent.get("id")
            if isinstance(etype, str) and isinstance(eid, int):
                out.setdefault(etype, set()).add(eid)
        seen += len(page)
        if seen >= max_events:
            log.warning("the cache is more than %d events behind; only those excuse differences", max_events)
            break
    return out


async def repair(store: Store, upstream: Upstream, touched: dict[str, set[int]]) -> int:
    """Re-read these entities from the site and store them (deleting what the site no longer has)."""
    from .refresh import Refresher
    touched = {t: ids for t, ids in touched.items() if ids}
    if not touched:
        return 0
    applied = await Refresher(store, upstream).apply(touched, source="repair", ref="validate")
    log.info("repaired %d entities", applied.total)
    return applied.total


def _types(store: Store, types: Iterable[str] | None) -> list[str]:
    out = list(types or [t for t in store.entities if t != ET])
    for t in out:
        if t not in store:
            raise ValueError(f"{t} is not a cached entity type")
    return out


# -- counts ---------------------------------------------------------------------------------

async def _compare_ids(store: Store, upstream: Upstream, etype: str) -> CountReport:
    cache_active, cache_retired = await asyncio.to_thread(_cache_ids, store, etype)
    site_active = await _site_ids(upstream, etype, "active")
    site_retired = await _site_ids(upstream, etype, "retired")
    rep = CountReport(etype,
                      site={"active": len(site_active), "retired": len(site_retired)},
                      cache={"active": len(cache_active), "retired": len(cache_retired)})
    site_all, cache_all = site_active | site_retired, cache_active | cache_retired
    rep.missing = sorted(site_all - cache_all)
    rep.extra = sorted(cache_all - site_all)
    rep.wrong_state = sorted((site_active & cache_retired) | (site_retired & cache_active))
    return rep


async def _recheck_ids(store: Store, upstream: Upstream, rep: CountReport) -> None:
    """Look again at only the differing ids; keep what still differs."""
    ids = sorted(rep.differing())

    def cache_state() -> dict[int, bool]:
        t = store[rep.entity_type].table
        out: dict[int, bool] = {}
        with store.engine.connect() as conn:
            for i in range(0, len(ids), PAGE):
                out.update(conn.execute(select(t.c.id, t.c[ACTIVE]).where(t.c.id.in_(ids[i:i + PAGE]))).all())
        return out
    cache = await asyncio.to_thread(cache_state)
    site: dict[int, bool] = {}
    for return_only, active in (("active", True), ("retired", False)):
        for i in range(0, len(ids), PAGE):
            async for page in upstream.read_pages(rep.entity_type, ["id"], filters=_by_id(ids[i:i + PAGE]),
                                                  return_only=return_only, page_size=PAGE):
                site.update({r["id"]: active for r in page})
    rep.missing = [i for i in ids if i in site and i not in cache]
    rep.extra = [i for i in ids if i in cache and i not in site]
    rep.wrong_state = [i for i in ids if i in cache and i in site and cache[i] != site[i]]


async def validate_counts(store: Store, upstream: Upstream, types: Iterable[str] | None = None, *,
                          settle: float = 1.0, do_repair: bool = False) -> list[CountReport]:
    """Per type: active/retired counts on both sides and the ids that differ."""
    since, backlog = await asyncio.to_thread(_cache_position, store)
    reports = [await _compare_ids(store, upstream, t) for t in _types(store, types)]
    await _settle(store, upstream, reports, since, backlog, settle, _recheck_ids)
    if do_repair:
        for rep in reports:
            if not rep.ok:
                rep.repaired = await repair(store, upstream, {rep.entity_type: rep.differing()})
    return reports


async def _settle(store: Store, upstream: Upstream, reports: list[Any], since: int | None,
                  backlog: list[int], settle: float, recheck: Any) -> None:
    """Excuse differences that pending events explain; re-check the rest once after `settle`."""
    if all(r.ok for r in reports):
        return
    pending = await pending_entities(store, upstream, since, backlog)
    for rep in reports:
        excused = rep.differing() & pending.get(rep.entity_type, set())
        if excused:
            rep.in_flight = sorted(excused)
            _drop(rep, excused)
    if settle > 0 and not all(r.ok for r in reports):
        await asyncio.sleep(settle)
        for rep in reports:
            if not rep.ok:
                await recheck(store, upstream, rep)


def _drop(rep: Any, ids: set[int]) -> None:
    rep.missing = [i for i in rep.missing if i not in ids]
    rep.extra = [i for i in rep.extra if i not in ids]
    if isinstance(rep, CountReport):
        rep.wrong_state = [i for i in rep.wrong_state if i not in ids]
    else:
        rep.diffs = [d for d in rep.diffs if d.entity_id not in ids]


# -- data -------------------------------------------------------------------------------------

def servable_fields(store: Store, reader: ReadEngine, etype: str, wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """Which fields the cache answers locally (others are passed through, so not compared)."""
    ok: list[str] = []
    skipped: dict[str, str] = {}
    with store.engine.connect() as conn:
        for f in wanted:
            if f == "id":
                continue
            try:
                reader.read(conn, {"type": etype, "return_fields": [f], "filters": _by_id([0]),
                                   "paging": {"entities_per_page": 1, "current_page": 1}})
                ok.append(f)
            except Passthrough as p:
                skipped[f] = p.reason
    return ok, skipped


def _local_read(store: Store, reader: ReadEngine, params: dict[str, Any]) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return reader.read(conn, params)


def _local_rows(store: Store, reader: ReadEngine, etype: str, fields: list[str], ids: list[int],
                return_only: str, withheld: dict[int, set[str]]) -> dict[int, dict[str, Any]]:
    """The cache's rows for `ids`. A value the cache withholds (an event's meta about a
    secret) makes the engine pass a read through; such rows are read again without the
    fields it withholds, which are noted in `withheld` rather than compared."""
    def read(some: list[int], fs: list[str]) -> dict[int, dict[str, Any]]:
        res = _local_read(store, reader, {
            "type": etype, "return_fields": fs, "filters": _by_id(some), "return_only": return_only,
            "paging": {"entities_per_page": PAGE, "current_page": 1}})
        return {r["id"]: r for r in res["entities"]}
    try:
        return read(ids, fields)
    except Passthrough:
        pass
    rows: dict[int, dict[str, Any]] = {}
    for i in ids:
        try:
            rows.update(read([i], fields))
            continue
        except Passthrough:
            pass
        kept = []
        for f in fields:
            try:
                read([i], [f])
                kept.append(f)
            except Passthrough:
                withheld.setdefault(i, set()).add(f)
        rows.update(read([i], kept))
    return rows


async def _site_records(upstream: Upstream, etype: str, fields: list[str], filters: dict[str, Any] | None,
                        return_only: str, limit: int | None, page: int) -> list[dict[str, Any]]:
    if limit:
        res = await upstream.call("read", {
            "type": etype, "return_fields": fields,
            "filters": filters or {"logical_operator": "and", "conditions": []},
            "return_only": return_only, "sorts": [{"field_name": "id", "direction": "asc"}],
            "paging": {"entities_per_page": limit, "current_page": page},
            "return_paging_info_without_counts": True})
        return list(res.get("entities") or [])
    out: list[dict[str, Any]] = []
    async for p in upstream.read_pages(etype, fields, filters=filters, return_only=return_only, page_size=PAGE):
        out.extend(p)
    return out


async def _compare_data(store: Store, upstream: Upstream, reader: ReadEngine, rep: DataReport,
                        filters: dict[str, Any] | None, return_only: str, limit: int | None, page: int,
                        only_ids: list[int] | None = None) -> None:
    etype, fields = rep.entity_type, rep.fields
    if only_ids is not None:
        site = await _site_records(upstream, etype, ["id", *fields], _by_id(only_ids), return_only, None, 1)
    else:
        site = await _site_records(upstream, etype, ["id", *fields], filters, return_only, limit, page)
    site_by_id = {r["id"]: r for r in site}
    ids = sorted(set(site_by_id) | set(only_ids or []))
    cache_by_id: dict[int, dict[str, Any]] = {}
    withheld: dict[int, set[str]] = {}
    for i in range(0, len(ids), PAGE):
        rows = await asyncio.to_thread(_local_rows, store, reader, etype, fields, ids[i:i + PAGE],
                                       return_only, withheld)
        cache_by_id.update(rows)
    rep.withheld = {f: sorted(i for i, fs in withheld.items() if f in fs)
                    for f in sorted({f for fs in withheld.values() for f in fs})}
    extra: set[int] = set(i for i in (only_ids or []) if i in cache_by_id and i not in site_by_id)
    if only_ids is None and not limit:  # the whole selection: the cache must hold nothing more
        params: dict[str, Any] = {"type": etype, "return_fields": [], "return_only": return_only,
                                  "paging": {"entities_per_page": PAGE, "current_page": 1}}
        if filters:
            params["filters"] = filters
        n = 1
        while True:
            params["paging"]["current_page"] = n
            res = await asyncio.to_thread(_local_read, store, reader, params)
            extra.update(r["id"] for r in res["entities"] if r["id"] not in site_by_id)
            if len(res["entities"]) < PAGE:
                break
            n += 1
    rep.compared = len(site_by_id)
    rep.missing = sorted(i for i in site_by_id if i not in cache_by_id)
    rep.extra = sorted(extra)
    rep.diffs = []
    for i, srec in sorted(site_by_id.items()):
        crec = cache_by_id.get(i)
        if crec is None:
            continue
        for f in fields:
            if f in withheld.get(i, ()):  # the cache holds no value to compare: reads go to the site
                continue
            s, c = _norm(srec.get(f)), _norm(crec.get(f))
            if s != c:
                rep.diffs.append(FieldDiff(i, f, s, c))


async def validate_data(store: Store, upstream: Upstream, types: Iterable[str] | None = None, *,
                        filters: Any = None, fields: list[str] | None = None, limit: int | None = None,
                        page: int = 1, retired: bool = False, settle: float = 1.0,
                        do_repair: bool = False) -> list[DataReport]:
    """Field values entity by entity: the site's answer against what the cache would serve."""
    reader = ReadEngine(store)
    wf = wire_filters(filters)
    return_only = "retired" if retired else "active"
    since, backlog = await asyncio.to_thread(_cache_position, store)
    reports: list[DataReport] = []
    for etype in _types(store, types):
        wanted = list(fields) if fields else return_fields_for(store, etype)
        unknown = [f for f in wanted if f != "id" and not store[etype].is_cached(f)]
        rep = DataReport(etype)
        rep.fields, rep.skipped_fields = await asyncio.to_thread(
            servable_fields, store, reader, etype, [f for f in wanted if f not in unknown])
        rep.skipped_fields.update({f: "not cached" for f in unknown})
        await _compare_data(store, upstream, reader, rep, wf, return_only, limit, page)
        reports.append(rep)

    async def recheck(store_: Store, upstream_: Upstream, rep: DataReport) -> None:
        await _compare_data(store_, upstream_, reader, rep, wf, return_only, None, 1,
                            only_ids=sorted(rep.differing()))
    await _settle(store, upstream, reports, since, backlog, settle, recheck)
    if do_repair:
        for rep in reports:
            if not rep.ok:
                rep.repaired = await repair(store, upstream, {rep.entity_type: rep.differing()})
        if wf is None and not limit:  # the whole type was compared: a clean type lifts its quarantines
            for rep in reports:
                if rep.ok or await _clean_after_repair(store, upstream, reader, rep, return_only):
                    rep.quarantines_cleared = await asyncio.to_thread(_lift_quarantines, store, rep)
    return reports


async def _clean_after_repair(store: Store, upstream: Upstream, reader: ReadEngine, rep: DataReport,
                              return_only: str) -> bool:
    """Whether the entities that differed compare clean now that they were repaired."""
    again = DataReport(rep.entity_type, fields=rep.fields)
    await _compare_data(store, upstream, reader, again, None, return_only, None, 1, only_ids=sorted(rep.differing()))
    return again.ok


def _lift_quarantines(store: Store, rep: DataReport) -> int:
    """Shadow quarantines of the type over the fields just validated (sgcache/store/quarantine.py)."""
    quarantine.ensure(store.engine, store.shadow_table)
    with store.engine.begin() as conn:
        n = quarantine.clear_validated(conn, store.shadow_table, rep.entity_type, rep.fields,
                                       by="validate data --repair")
    if n:
        log.info("%s validated clean: lifted %d shadow quarantine(s)", rep.entity_type, n)
    return n


# -- printing -----------------------------------------------------------------------------------

def _ids(ids: list[int], n: int = 20) -> str:
    shown = ", ".join(map(str, ids[:n]))
    return shown + (f" … (+{len(ids) - n})" if len(ids) > n else "")


def format_counts(reports: list[CountReport]) -> str:
    lines = []
    for r in reports:
        head = (f"{r.entity_type:<24} site {r.site['active']}+{r.site['retired']} retired  "
                f"cache {r.cache['active']}+{r.cache['retired']} retired  {'ok' if r.ok else 'MISMATCH'}")
        lines.append(head)
        for label, ids in (("missing", r.missing), ("extra", r.extra), ("wrong state", r.wrong_state),
                           ("in flight", r.in_flight)):
            if ids:
                lines.append(f"    {label} ({len(ids)}): {_ids(ids)}")
        if r.repaired:
            lines.append(f"    repaired {r.repaired} entities")
    return "\n".join(lines)


def format_data(reports: list[DataReport], max_diffs: int = 50) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.entity_type:<24} {r.compared} entities, {len(r.fields)} fields  "
                     f"{'ok' if r.ok else 'MISMATCH'}")
        for f, why in sorted(r.skipped_fields.items()):
            lines.append(f"    not compared {f}: {why}")
        for f, ids in sorted(r.withheld.items()):
            lines.append(f"    not compared {f} of {len(ids)} entities, withheld from the cache: {_ids(ids)}")
        for label, ids in (("missing", r.missing), ("extra", r.extra), ("in flight", r.in_flight)):
            if ids:
                lines.append(f"    {label} ({len(ids)}): {_ids(ids)}")
        for d in r.diffs[:max_diffs]:
            lines.append(f"    {r.entity_type} {d.entity_id} {d.field}: site={json.dumps(d.site, ensure_ascii=False)} "
                         f"cache={json.dumps(d.cache, ensure_ascii=False)}")
        if len(r.diffs) > max_diffs:
            lines.append(f"    … {len(r.diffs) - max_diffs} more differences")
        if r.repaired:
            lines.append(f"    repaired {r.repaired} entities")
        if r.quarantines_cleared:
            lines.append(f"    lifted {r.quarantines_cleared} shadow quarantine(s)")
    return "\n".join(lines)
