"""`summarize` answered from the store, exactly as the site computes it, or refused.

The filter is the read engine's (same SQL, same null and link rules); the values to
summarize or group by are then loaded in id order and aggregated in Python. Python and
not SQL aggregation because the site's arithmetic must be matched bit for bit: float
sums in record order, banker's rounding of percentages, the first-seen spelling of a
case-insensitive group, code point order of text maxima. Anything whose rendering is
not certain (url/serializable values, min/max/status_list over links or tag lists,
paths through multi-entity links, very large sets) raises Passthrough.

Semantics (matching the site as the mock models it): `count` counts non-empty values,
`record_count` records; sums of no values are 0, other summaries over no values null;
`percentage` is the rounded percent of records whose value is truthy (or equals the
summary's `value`, case-insensitively); `status_percentage` of records with status
`value` (default `fin`); groups are ordered by group key, empty group first ascending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..store.field_types import (
    BoolField,
    DateField,
    DateTimeField,
    EntityField,
    FieldType,
    FloatField,
    IntField,
    MultiEntityField,
    StringField,
    TagListField,
    TextField,
    fold,
)
from ..store.tables import ACTIVE
from .engine import Passthrough, ReadEngine, _Query
from .filters import FieldPath, parse_filters, resolve_path
from .grouping import (
    EMPTY,
    GROUP_TYPES,
    SUMMARY_TYPES,
    Group,
    link_group,
    scalar_group,
    tag_groups,
)

KNOWN_PARAMS = frozenset({"type", "summaries", "filters", "grouping", "include_archived_projects"})
SCALAR = (TextField, StringField, IntField, FloatField, BoolField, DateField, DateTimeField)
#: Above this many matching records the site is asked (Python aggregation stays cheap).
MAX_ROWS = 200_000


@dataclass(frozen=True)
class Link:
    """One stored link: its target, whether the target is live, and its display name."""

    type: str
    id: int
    live: bool
    name: Any


Getter = Callable[[Any], Any]


class Summarizer:
    """Answers `summarize` from the store through a ReadEngine, or raises Passthrough."""

    def __init__(self, reader: ReadEngine) -> None:
        self.reader = reader
        self.store = reader.store
        self.schema = reader.schema

    def summarize(self, conn: Connection, params: Any) -> dict[str, Any]:
        etype = self.reader.cached_type(params, KNOWN_PARAMS, "summarize")
        summaries = params.get("summaries") or []
        grouping = params.get("grouping") or []
        if not isinstance(summaries, list) or not isinstance(grouping, list):
            raise Passthrough("invalid summaries/grouping: the site decides")
        try:
            group = parse_filters(self.schema, etype, params.get("filters"), "summarize")
            specs = []
            for s in summaries:
                if not isinstance(s, dict) or s.get("type") not in SUMMARY_TYPES:
                    raise Passthrough("invalid summary: the site decides")
                specs.append((s["field"], s["type"], s.get("value"),
                              resolve_path(self.schema, etype, s.get("field"), "summarize")))
            groups = []
            for g in grouping:
                if not isinstance(g, dict) or g.get("type") not in GROUP_TYPES \
                        or g.get("direction", "asc") not in ("asc", "desc"):
                    raise Passthrough("invalid grouping: the site decides")
                groups.append((g["type"], g.get("direction", "asc") == "desc",
                               resolve_path(self.schema, etype, g.get("field"), "summarize")))
        except errors.Fault as e:
            raise Passthrough(f"invalid request, site decides: {e.message}") from None
        for _f, kind, value, fp in specs:
            self._check_summary(kind, fp)
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise Passthrough("summary value is not a scalar")
        for kind, _d, fp in groups:
            self._check_grouping(fp)

        conn = self.reader.bounded(conn)  # compiled statements kept within the engine's bounds
        root = self.reader.alias(etype, fresh=True)
        q = _Query(self.reader, etype, root, root)
        where = [root.c[ACTIVE], self.reader._group(group, root, etype)]
        if params.get("include_archived_projects", True) is False:
            where.append(self.reader._not_archived(root, etype))
        loaders: dict[str, tuple[Getter, FieldPath]] = {}
        for fp in [spec[3] for spec in specs] + [g[2] for g in groups]:
            if fp.text not in loaders:
                loaders[fp.text] = (self._plan(q, fp), fp)
        q.label(root.c.id)  # every row carries its id
        count = conn.execute(select(func.count()).select_from(root).where(*where)).scalar_one()
        if count > MAX_ROWS:
            raise Passthrough(f"summarize over {count} records")
        rows = conn.execute(select(*q.columns).select_from(q.from_clause).where(*where)
                            .order_by(root.c.id)).mappings().all()
        multi = self._load_multi(conn, loaders, rows)
        records = []
        for row in rows:
            rec = {text: get(row) for text, (get, _fp) in loaders.items()}
            for text, values in multi.items():
                pid = rec[text][2]
                rec[text] = None if pid is None else values.get(pid, [])
            records.append(rec)
        return {"summaries": self._summaries(specs, records), "groups": self._group(specs, groups, records)}

    # -- what can be answered ------------------------------------------------------------
    def _leaf_ft(self, fp: FieldPath) -> FieldType | None:
        if any(h.field.is_multi for h in fp.hops):
            raise Passthrough(f"summarize through multi-entity path {fp.text}")
        leaf = fp.hops[-1].to_type if fp.hops else fp.root_type
        return self.reader._ft(leaf, fp.field.name, "summarize")

    def _check_summary(self, kind: str, fp: FieldPath) -> None:
        ft = self._leaf_ft(fp)
        if ft is not None and not isinstance(ft, SCALAR + (EntityField, MultiEntityField, TagListField)):
            raise Passthrough(f"summarize over {ft.fs.data_type} field {fp.text}")
        if kind in ("maximum", "minimum", "earliest", "latest", "status_list") and ft is not None \
                and not isinstance(ft, SCALAR):
            raise Passthrough(f"{kind} over {ft.fs.data_type} field {fp.text}")

    def _check_grouping(self, fp: FieldPath) -> None:
        ft = self._leaf_ft(fp)
        if ft is not None and not isinstance(ft, SCALAR + (EntityField, MultiEntityField, TagListField)):
            raise Passthrough(f"grouping by {ft.fs.data_type} field {fp.text}")

    # -- loading values -------------------------------------------------------------------
    def _plan(self, q: _Query, fp: FieldPath) -> Getter:
        """Select what one path needs; return row -> the value as the site holds it."""
        ft = self._leaf_ft(fp)
        table = self.reader._join_path(q, fp)
        present = q.label(table.c.id) if fp.hops else None
        if ft is None:
            lid = q.label(table.c.id)
            return lambda row: row[lid]
        if isinstance(ft, MultiEntityField):
            self.reader._targets(ft)
            pid = present or q.label(table.c.id)
            return lambda row: ("multi", ft, row[pid])
        if isinstance(ft, EntityField):
            tcol = q.label(table.c[ft.name + "__type"])
            icol = q.label(table.c[ft.name + "__id"])
            names: dict[str, tuple[str | None, str]] = {}
            for t in self.reader._targets(ft):
                nf = self.reader._name_col(t)
                tgt = self.reader.alias(t)
                q.from_clause = q.from_clause.outerjoin(tgt, and_(
                    table.c[ft.name + "__type"] == t, table.c[ft.name + "__id"] == tgt.c.id))
                names[t] = (q.label(tgt.c[nf]) if nf else None, q.label(tgt.c[ACTIVE]))

            def link(row: Any) -> Any:
                if present is not None and row[present] is None:
                    return None
                t, i = row[tcol], row[icol]
                if t is None or i is None:
                    return None
                if t not in names or row[names[t][1]] is None:
                    raise Passthrough(f"link target {t} {i} is not in the cache")
                nl, al = names[t]
                return Link(t, i, bool(row[al]), row[nl] if nl else None)
            return link
        labels = {c: q.label(table.c[c]) for c in ft.column_names}

        def scalar(row: Any) -> Any:
            if present is not None and row[present] is None:
                return None
            return ft.from_db({c: row[lbl] for c, lbl in labels.items()})
        return scalar

    def _load_multi(self, conn: Connection, loaders: dict[str, tuple[Getter, FieldPath]],
                    rows: Any) -> dict[str, dict[int, list[Link]]]:
        """Multi-entity values of the rows: stored links in order, each with liveness and name."""
        out: dict[str, dict[int, Any]] = {}
        for text, (get, _fp) in loaders.items():
            if not rows:
                continue
            probe = get(rows[0])
            if not (isinstance(probe, tuple) and probe and probe[0] == "multi"):
                continue
            ft = probe[1]
            a = self.store[ft.fs.entity_type].assoc[ft.name]
            cols: list[Any] = [a.c.parent_id, a.c.child_type, a.c.child_id]
            frm: Any = a
            per_type = []
            for t in self.reader._targets(ft):
                tgt = self.reader.alias(t)
                frm = frm.outerjoin(tgt, and_(a.c.child_type == t, a.c.child_id == tgt.c.id))
                nf = self.reader._name_col(t)
                per_type.append((t, f"n{len(per_type)}", f"a{len(per_type)}"))
                cols.append((tgt.c[nf] if nf else func.nullif("", "")).label(per_type[-1][1]))
                cols.append(tgt.c[ACTIVE].label(per_type[-1][2]))
            values: dict[int, list[Link]] = {}
            pids = sorted({get(r)[2] for r in rows} - {None})
            for i in range(0, len(pids), 500):
                stmt = select(*cols).select_from(frm).where(a.c.parent_id.in_(pids[i:i + 500])).order_by(
                    a.c.parent_id, a.c.idx)
                for r in conn.execute(stmt).mappings():
                    for t, nl, al in per_type:
                        if r["child_type"] != t:
                            continue
                        if r[al] is None:
                            raise Passthrough(f"linked {t} {r['child_id']} is not in the cache")
                        values.setdefault(r["parent_id"], []).append(
                            Link(t, r["child_id"], bool(r[al]), r[nl]))
            out[text] = values
        return out

    # -- aggregation ---------------------------------------------------------------------------
    def _summaries(self, specs: list[Any], recs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, kind, value, fp in specs:
            vals = [_summary_value(r[fp.text]) for r in recs]
            present = [v for v in vals if v is not None and v != []]
            out[field] = _summary(kind, value, vals, present)
        return out

    def _group(self, specs: list[Any], groups: list[Any], recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not groups:
            return []
        (kind, desc, fp), rest = groups[0], groups[1:]
        buckets: dict[Any, tuple[Any, Any, list[dict[str, Any]]]] = {}
        for r in recs:
            for key, gval, gname in _keys(kind, r[fp.text]):
                buckets.setdefault(key, (gval, gname, []))[2].append(r)
        order = sorted(buckets, key=lambda k: (k is not None, k if k is not None else 0), reverse=desc)
        out = []
        for k in order:
            gval, gname, members = buckets[k]
            g: dict[str, Any] = {"group_name": gname, "group_value": gval,
                                 "summaries": self._summaries(specs, members)}
            if rest:
                g["groups"] = self._group(specs, rest, members)
            out.append(g)
        return out


def _live(v: Any) -> list[Link]:
    if isinstance(v, Link):
        return [v] if v.live else []
    if isinstance(v, list):
        return [x for x in v if isinstance(x, Link) and x.live]
    return []


def _summary_value(v: Any) -> Any:
    """The value a summary sees: links count only when one of them is live."""
    if isinstance(v, Link) or (isinstance(v, list) and v and isinstance(v[0], Link)):
        return v if _live(v) else None
    if isinstance(v, list) and not v:
        return v
    return v


def _keys(kind: str, v: Any) -> list[Group]:
    """(sort key, group_value, group_name) of the group(s) a value falls in."""
    if isinstance(v, Link) or (isinstance(v, list) and v and isinstance(v[0], Link)):
        links = _live(v)
        return [link_group(kind, x.type, x.id, x.name) for x in links] if links else [EMPTY]
    if isinstance(v, list):  # tag names (or an empty multi-entity list)
        return tag_groups(v)
    return [scalar_group(kind, v)]


def _fold(v: Any) -> Any:
    return fold(v) if isinstance(v, str) else v


def _summary(kind: str, value: Any, vals: list[Any], present: list[Any]) -> Any:
    n = len(vals)
    if kind == "record_count":
        return n
    if kind == "count":
        return len(present)
    if kind == "checked":
        return sum(1 for v in vals if v is True)
    if kind == "unchecked":
        return sum(1 for v in vals if not v)
    nums = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if kind == "sum":
        return sum(nums) if nums else 0
    if kind == "average":
        return sum(nums) / len(nums) if nums else None
    if kind in ("maximum", "latest", "minimum", "earliest"):
        pick = max if kind in ("maximum", "latest") else min
        try:
            return pick(present) if present else None
        except TypeError:
            return None
    if kind == "percentage":
        if not n:
            return 0
        hit = sum(1 for v in vals if (_fold(v) == _fold(value) if value is not None else bool(v)))
        return round(100 * hit / n)
    if kind == "status_percentage":
        if not n:
            return 0
        want = _fold(value if value is not None else "fin")
        return round(100 * sum(1 for v in vals if _fold(v) == want) / n)
    counts: dict[str, int] = {}  # status_list
    for v in present:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts
