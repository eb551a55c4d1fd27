"""Shadow mismatches and the quarantine they put on a request's shape (`_sgcache_shadow`).

When shadow verification (sgcache/serve/shadow.py) finds a locally answered read that
the site answers differently, and the event log does not explain the difference, one
row is written here; while any uncleared row names a shape, reads of that shape are
passed through. An operator lifts it (`sgcache shadow clear`), or `sgcache validate
data --repair` does once the type validates clean. The table is in the database, not in
a process, so every worker and host honours it and an operator can read it days later.

**The shape** is the entity type, the method, the fields and relations the request
involves (each filter's path and relation, the return fields, the sort fields, the
summary and grouping fields) and `return_only`; never a value. Why this granularity:

* A wrong answer comes from one of two places: query semantics (a relation, a deep
  path, a field type's rendering) or stored rows (a sync bug, a corrupted row). The
  first is the same code path for every value of the filter, so the shape must ignore
  values, or no later request would ever match it and nothing would be contained.
* The entity type alone is too coarse: one relation answered wrongly on a busy type
  would send all of that type's reads to the site.
* Return fields belong to it: a field rendered or stored wrongly is wrong in every
  answer that returns it, whatever the filters.

What it does not contain: a wrong row reached through another shape is caught when a
shadow of that shape samples it; `validate data --repair` on the type is the cure.
Nothing secret is stored: the shape holds names only, the diff entity ids and field
names, the caller its script name or login.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError

from ..protocol.values import format_datetime, utcnow

TABLE = "_sgcache_shadow"


def shadow_table(md: MetaData) -> Table:
    """One row per shadow mismatch; uncleared rows quarantine their shape."""
    t = Table(
        TABLE, md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("at", String(26), nullable=False),
        Column("method", String(16), nullable=False),  # read | summarize | RPC_LABELS
        Column("entity_type", String(64), nullable=False),
        Column("shape_key", String(16), nullable=False),
        Column("shape", Text, nullable=False),  # JSON: the names `shape_of` keeps
        Column("diff", Text, nullable=False),  # JSON: entity ids and field names, never values
        Column("position", Text),  # JSON: the cache's event position at answer time
        Column("caller", String(128)),  # script name or login (never a secret)
        Column("cleared_at", String(26)),  # NULL while the shape is quarantined
        Column("cleared_by", String(64)),
    )
    Index(f"ix_{TABLE}_shape", t.c.shape_key)
    return t


def ensure(engine: Engine, table: Table) -> None:
    """Create the table in a database made before it existed (several processes may race)."""
    try:
        table.create(engine, checkfirst=True)
    except DatabaseError:  # another process created it between the check and the CREATE
        table.create(engine, checkfirst=True)


# -- shapes ---------------------------------------------------------------------------------

def _filter_names(filters: Any, out: set[str]) -> None:
    """`path relation` of every condition, nested groups included (values left out)."""
    if isinstance(filters, Mapping):
        if "conditions" in filters or "filters" in filters:
            _filter_names(filters.get("conditions", filters.get("filters")), out)
        elif "path" in filters:
            out.add(f"{filters.get('path')} {filters.get('relation')}")
    elif isinstance(filters, list):
        for c in filters:
            if isinstance(c, list) and len(c) >= 2:  # shotgun_api3's list form, if ever sent raw
                out.add(f"{c[0]} {c[1]}")
            else:
                _filter_names(c, out)


def _names(items: Any, *keys: str) -> list[str]:
    out: set[str] = set()
    for it in items if isinstance(items, list) else []:
        if isinstance(it, Mapping):
            out.add(" ".join(str(it.get(k)) for k in keys))
        else:
            out.add(str(it))
    return sorted(out)


#: RPCs answered locally besides `read` and `summarize`, and the label the `method` column
#: keeps for each (16 characters).
RPC_LABELS = {"note_thread_contents": "note_thread", "query_display_name_cache": "text_search"}
#: The types a note thread's answer is read from, besides those of its `entity_fields`.
NOTE_THREAD_TYPES = ("Note", "Reply", "Attachment")


def _rpc_shape(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A local RPC's shape: the types it reads (`types`, where events and `updated_at` are
    looked for to call a difference lag) and the names it involves, as `Type.name`.

    Its `type` is what the quarantine is kept under: `Note` for a note thread; for a text
    search, the searched types joined (one wrong type's search must not quarantine the
    searches of other types)."""
    if method == "note_thread_contents":
        extra = params.get("entity_fields") if isinstance(params.get("entity_fields"), Mapping) else {}
        fields = sorted(f"{t}.{f}" for t, fs in extra.items() if isinstance(fs, list) for f in fs)
        types = sorted({*NOTE_THREAD_TYPES, *(str(t) for t in extra)})
        return {"method": method, "type": "Note", "types": types, "fields": fields}
    searched = params.get("entity_types") if isinstance(params.get("entity_types"), Mapping) else {}
    filters: set[str] = set()
    for t, f in searched.items():
        names: set[str] = set()
        _filter_names(f, names)
        filters |= {f"{t}.{n}" for n in names}
    types = sorted(str(t) for t in searched)
    return {"method": method, "type": ",".join(types)[:64], "types": types, "filters": sorted(filters),
            "project_ids": bool(params.get("project_ids")), "max_results": params.get("max_results") is not None}


def shape_of(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The request's shape: names only (see the module docstring for why these)."""
    if method in RPC_LABELS:
        return _rpc_shape(method, params)
    filters: set[str] = set()
    _filter_names(params.get("filters"), filters)
    shape: dict[str, Any] = {"method": method, "type": params.get("type"), "filters": sorted(filters)}
    if method == "summarize":
        shape["summaries"] = _names(params.get("summaries"), "field", "type")
        shape["grouping"] = _names(params.get("grouping"), "field", "type")
    else:
        shape["fields"] = _names(params.get("return_fields"))
        shape["sorts"] = _names(params.get("sorts"), "field_name", "direction")
        shape["return_only"] = params.get("return_only", "active")
    if params.get("include_archived_projects", True) is False:
        shape["archived_projects"] = False
    return shape


def shape_key(shape: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shape_paths(shape: Mapping[str, Any]) -> list[str]:
    """Every field path the shape names (filters, fields, sorts, summaries, grouping)."""
    out: list[str] = []
    for key in ("filters", "fields", "sorts", "summaries", "grouping"):
        out += [s.split(" ", 1)[0] for s in shape.get(key) or []]
    return out


def linked_types(shape: Mapping[str, Any]) -> set[str]:
    """The other entity types a shape reaches through deep paths (`sg_sequence.Sequence.code`),
    or, for a local RPC, the types it reads."""
    if shape.get("method") in RPC_LABELS:
        return set(shape.get("types") or [])
    out: set[str] = set()
    for path in shape_paths(shape):
        parts = path.split(".")
        out.update(parts[1::2])
    return out


# -- rows -------------------------------------------------------------------------------------

def record(conn: Connection, table: Table, *, method: str, shape: Mapping[str, Any], diff: Mapping[str, Any],
           position: Mapping[str, Any] | None, caller: str | None) -> int:
    """Write one mismatch; its shape is quarantined from now on. Returns its id."""
    res = conn.execute(table.insert().values(
        at=format_datetime(utcnow()), method=RPC_LABELS.get(method, method)[:16], entity_type=str(shape.get("type"))[:64],
        shape_key=shape_key(shape), shape=json.dumps(shape, sort_keys=True, default=str),
        diff=json.dumps(diff, sort_keys=True, default=str), position=json.dumps(position, default=str),
        caller=(caller or "")[:128] or None))
    return int(res.inserted_primary_key[0])


def quarantined(conn: Connection, table: Table) -> dict[str, set[str]]:
    """entity type -> the shape keys quarantined now."""
    out: dict[str, set[str]] = {}
    for etype, key in conn.execute(select(table.c.entity_type, table.c.shape_key)
                                   .where(table.c.cleared_at.is_(None))):
        out.setdefault(etype, set()).add(key)
    return out


def mismatches(conn: Connection, table: Table, *, include_cleared: bool = True,
               limit: int = 200) -> list[dict[str, Any]]:
    """The newest mismatches first, as plain dicts (`quarantined`: not cleared yet)."""
    q = select(table).order_by(table.c.id.desc()).limit(limit)
    if not include_cleared:
        q = q.where(table.c.cleared_at.is_(None))
    out = []
    for r in conn.execute(q).mappings():
        d = dict(r)
        for k in ("shape", "diff", "position"):
            d[k] = json.loads(d[k]) if d[k] else None
        d["quarantined"] = d["cleared_at"] is None
        out.append(d)
    return out


def clear(conn: Connection, table: Table, *, by: str, ids: Iterable[int] = (), entity_types: Iterable[str] = (),
          everything: bool = False, shape_keys: Iterable[str] = ()) -> int:
    """Lift quarantines: of the shapes of these mismatch ids, of these types or keys, or all.

    Clearing a mismatch by id lifts its whole shape (every uncleared row of it), since
    the shape stays quarantined while any row names it. Returns the rows cleared.
    """
    keys = set(shape_keys)
    if ids:
        keys |= set(conn.execute(select(table.c.shape_key).where(table.c.id.in_(list(ids)))).scalars())
    types = list(entity_types)
    cond = table.c.cleared_at.is_(None)
    if not everything:
        if not keys and not types:
            return 0
        which = []
        if keys:
            which.append(table.c.shape_key.in_(sorted(keys)))
        if types:
            which.append(table.c.entity_type.in_(types))
        cond = cond & or_(*which)
    res = conn.execute(update(table).where(cond).values(cleared_at=format_datetime(utcnow()), cleared_by=by[:64]))
    return int(res.rowcount or 0)


def clear_validated(conn: Connection, table: Table, entity_type: str, fields: Iterable[str], *, by: str) -> int:
    """Lift the type's quarantines whose shape involves only these (validated) fields.

    `validate data --repair` calls this when the type compares clean: the rows under
    every such shape are now as the site has them. A shape reaching into a field the
    validation did not compare stays quarantined.
    """
    covered = set(fields) | {"id"}
    keys = set()
    for key, text in conn.execute(select(table.c.shape_key, table.c.shape).where(
            table.c.cleared_at.is_(None), table.c.entity_type == entity_type)):
        shape = json.loads(text)
        if shape.get("method") in RPC_LABELS:  # reads several types: an operator lifts it
            continue
        if all(p.split(".", 1)[0] in covered for p in shape_paths(shape)):
            keys.add(key)
    return clear(conn, table, by=by, shape_keys=keys) if keys else 0
