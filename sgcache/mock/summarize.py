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


def _ranked(pick: Callable[..., Any]) -> Callable[[Any, list[Any], list[Any]], Any]:
    """max/min over the present values; values that do not compare give null."""
    def reduce(_want: Any, _vals: list[Any], present: list[Any]) -> Any:
        if not present:
            return None
        try:
            return pick(present)
        except TypeError:
            return None
    return reduce


def _numbers(present: list[Any]) -> list[float]:
    return [v for v in present if type(v) in (int, float)]


def _share(hits: int, total: int) -> int:
    """Percent of `total`, as the site rounds it (0 over no rows)."""
    return round(hits * 100 / total) if total else 0


def _percentage(want: Any, vals: list[Any], _present: list[Any]) -> int:
    if want is None:
        return _share(len([v for v in vals if v]), len(vals))
    target = fold(want)
    return _share(len([v for v in vals if fold(v) == target]), len(vals))


def _status_percentage(want: Any, vals: list[Any], _present: list[Any]) -> int:
    target = fold("fin" if want is None else want)
    return _share(len([v for v in vals if fold(v) == target]), len(vals))


def _status_list(_want: Any, _vals: list[Any], present: list[Any]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for status in map(str, present):
        tally[status] = tally.get(status, 0) + 1
    return tally


def _average(_want: Any, _vals: list[Any], present: list[Any]) -> Any:
    nums = _numbers(present)
    return sum(nums) / len(nums) if nums else None


#: One reducer per summary type: (the summary's `value`, every record's value, the
#: non-empty ones) -> the summary.
REDUCERS: dict[str, Callable[[Any, list[Any], list[Any]], Any]] = {
    "record_count": lambda _w, vals, _p: len(vals),
    "count": lambda _w, _v, present: len(present),
    "checked": lambda _w, vals, _p: len([v for v in vals if v is True]),
    "unchecked": lambda _w, vals, _p: len([v for v in vals if not v]),
    "sum": lambda _w, _v, present: sum(_numbers(present)),
    "average": _average,
    "maximum": _ranked(max), "latest": _ranked(max),
    "minimum": _ranked(min), "earliest": _ranked(min),
    "percentage": _percentage,
    "status_percentage": _status_percentage,
    "status_list": _status_list,
}


def _summary(kind: str, value: Any, vals: list[Any], present: list[Any]) -> Any:
    reducer = REDUCERS.get(kind)
    if reducer is None:  # pragma: no cover - SUMMARY_TYPES is checked on the way in
        raise errors.crud(M, f"unknown summary type {kind!r}")
    return reducer(value, vals, present)
