"""The `summarize` RPC: summary values over the filtered records, optionally grouped.

Choices where the site is not documented (the cache matches these):
* ``count`` counts non-null values (non-empty for multi-entity/tag_list);
  ``record_count`` counts records. Both are 0 over no rows; the other summaries
  are null over no values.
* ``percentage`` is the percent (0-100, rounded to an int) of records whose value is
  truthy, or equal to the summary's ``value`` key when given;
  ``status_percentage`` the percent with status ``value`` (default ``"fin"``);
  ``status_list`` a ``{status: count}`` dict; ``checked``/``unchecked`` counts.
* Numeric groupings bucket on floor(value / size) * size; ``group_name`` is
  ``"lo - hi"``. Date groupings work on the UTC date: ``day`` ``YYYY-MM-DD``,
  ``week`` the Monday ``YYYY-MM-DD``, ``month`` ``YYYY-MM``, ``quarter`` ``YYYY Qn``,
  ``year`` ``YYYY``. Groups are ordered by group value, nulls first (asc).
"""

from __future__ import annotations

from typing import Any, Callable

from ..protocol import errors
from .filters import Path
from .grouping import (
    GROUP_TYPES,
    NO_VALUE,
    SUMMARY_TYPES,
    Bucket,
    for_link,
    for_tags,
    for_value,
    in_order,
)
from .query import MULTI, Engine, empty_value, fold

M = "summarize"


class Summarizer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _value(self, fp: Path) -> Callable[[dict[str, Any]], Any]:
        fname = fp.leaf.name
        default = empty_value(fp.leaf.data_type)
        if not fp.steps:
            return lambda r: r.get(fname, default)

        def deep(r: dict[str, Any]) -> Any:
            reached = self.engine.follow(r, fp)
            return reached[0].get(fname, default) if reached else None
        return deep

    def summarize(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise errors.crud(M, "parameters must be an object")
        etype = params.get("type")
        store = self.engine.store
        if not isinstance(etype, str) or etype not in store.schema:
            raise errors.unknown_entity_type(M, etype)
        summaries = params.get("summaries") or []
        grouping = params.get("grouping") or []
        if not isinstance(summaries, list) or not isinstance(grouping, list):
            raise errors.crud(M, "'summaries' and 'grouping' must be lists")
        specs = []
        for s in summaries:
            if not isinstance(s, dict) or s.get("type") not in SUMMARY_TYPES:
                raise errors.crud(M, f"invalid summary {s!r}; types are {', '.join(SUMMARY_TYPES)}")
            fp = self.engine.path(etype, s.get("field"), M)
            specs.append((s["field"], s["type"], s.get("value"), fp, self._value(fp)))
        groups = []
        for g in grouping:
            if not isinstance(g, dict) or g.get("type") not in GROUP_TYPES:
                raise errors.crud(M, f"invalid grouping {g!r}; types are {', '.join(GROUP_TYPES)}")
            if g.get("direction", "asc") not in ("asc", "desc"):
                raise errors.crud(M, f"grouping direction must be 'asc' or 'desc', got {g.get('direction')!r}")
            fp = self.engine.path(etype, g.get("field"), M)
            groups.append((g["type"], g.get("direction", "asc") == "desc", fp, self._value(fp)))
        include_archived = params.get("include_archived_projects", True)
        ids = self.engine.select(etype, params.get("filters"), None, "active",
                                 include_archived is not False, M).all()
        table = store.tables[etype]
        recs = [table[i] for i in ids]
        return {"summaries": self._summaries(specs, recs), "groups": self._group(specs, groups, recs)}

    def _summaries(self, specs: list[Any], recs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, kind, value, fp, get in specs:
            vals = [get(r) for r in recs]
            dtype = fp.leaf.data_type
            if dtype == "entity" or dtype in MULTI:
                vals = [v if self.engine.links(v) else None for v in vals]
            present = [v for v in vals if v is not None and v != []]
            out[field] = _summary(kind, value, vals, present)
        return out

    def _group(self, specs: list[Any], groups: list[Any], recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not groups:
            return []
        (kind, desc, fp, get), rest = groups[0], groups[1:]
        buckets: dict[Any, tuple[Bucket, list[dict[str, Any]]]] = {}
        for r in recs:
            for b in self._keys(kind, fp, get(r)):
                buckets.setdefault(b.key, (b, []))[1].append(r)
        out = []
        for k in in_order(buckets, desc):
            first, members = buckets[k]
            gval, gname = first.value, first.name
            g: dict[str, Any] = {"group_name": gname, "group_value": gval,
                                 "summaries": self._summaries(specs, members)}
            if rest:
                g["groups"] = self._group(specs, rest, members)
            out.append(g)
        return out

    def _keys(self, kind: str, fp: Path, v: Any) -> list[Bucket]:
        """The group(s) a value falls in."""
        dtype = fp.leaf.data_type
        if dtype == "entity" or dtype in MULTI:
            links = self.engine.links(v)
            return [for_link(kind, l["type"], l["id"], self.engine.name_of(l["type"], l["id"]))
                    for l in links] if links else [NO_VALUE]
        if dtype == "tag_list":
            return for_tags(v or [])
        return [for_value(kind, v)]


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
    if kind in ("maximum", "latest"):
        try:
            return max(present) if present else None
        except TypeError:
            return None
    if kind in ("minimum", "earliest"):
        try:
            return min(present) if present else None
        except TypeError:
            return None
    if kind == "percentage":
        if not n:
            return 0
        hit = sum(1 for v in vals if (fold(v) == fold(value) if value is not None else bool(v)))
        return round(100 * hit / n)
    if kind == "status_percentage":
        if not n:
            return 0
        want = fold(value if value is not None else "fin")
        return round(100 * sum(1 for v in vals if fold(v) == want) / n)
    if kind == "status_list":
        counts: dict[str, int] = {}
        for v in present:
            counts[str(v)] = counts.get(str(v), 0) + 1
        return counts
    raise errors.crud(M, f"unknown summary type {kind!r}")  # pragma: no cover
