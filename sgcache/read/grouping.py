"""How the cache names `summarize` groups: bucket sizes, date periods, labels and order.

The cache's reading of the site's grouping (what `group_value` and `group_name` look
like and how groups sort); the mock site builds its groups with its own code
(`sgcache.mock.grouping`), so the differential tests check one against the other.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SUMMARY_TYPES: tuple[str, ...] = (
    "record_count", "count", "sum", "maximum", "minimum", "average", "earliest", "latest",
    "percentage", "status_percentage", "status_list", "checked", "unchecked")
BUCKETS: dict[str, int] = {"tens": 10, "hundreds": 100, "thousands": 1000, "tensofthousands": 10_000,
                           "hundredsofthousands": 100_000, "millions": 1_000_000}
DATE_GROUPS: tuple[str, ...] = ("day", "week", "month", "quarter", "year", "clustered_date", "oneday",
                                "fivedays")
GROUP_TYPES: tuple[str, ...] = ("exact", "entitytype", "firstletter") + tuple(BUCKETS) + DATE_GROUPS

#: (sort key, group_value, group_name) of one group.
Group = tuple[Any, Any, Any]
#: The group of records whose value is empty.
EMPTY: Group = (None, None, "")


def link_group(kind: str, etype: str, eid: int, name: Any) -> Group:
    """The group of one live linked entity."""
    if kind == "entitytype":
        return (etype, etype, etype)
    if kind == "firstletter":
        c = str(name or "")[:1].upper()
        return (c, c, c)
    # ordered by (type, id): the client's `summarize` docstring groups Steps Client (id 1),
    # Online (2), ..., Comp (8), an order no sort by name gives
    return ((etype, eid), {"type": etype, "id": eid, "name": name, "valid": "valid"}, name)


def tag_groups(tags: list[str]) -> list[Group]:
    """A tag list falls in one group per tag (or the empty group)."""
    return [(t.casefold(), t, t) for t in tags] if tags else [EMPTY]


def scalar_group(kind: str, v: Any) -> Group:
    """The group of a non-link value."""
    if v is None:
        return EMPTY
    if kind in BUCKETS and isinstance(v, (int, float)) and not isinstance(v, bool):
        size = BUCKETS[kind]
        lo = int(v // size) * size
        return (lo, lo, f"{lo} - {lo + size - 1}")
    if kind in DATE_GROUPS and isinstance(v, str) and len(v) >= 10:
        try:
            d = dt.date.fromisoformat(v[:10])
        except ValueError:
            return (v, v, v)
        if kind == "week":
            s = (d - dt.timedelta(days=d.weekday())).isoformat()
        elif kind == "month":
            s = d.strftime("%Y-%m")
        elif kind == "quarter":
            s = f"{d.year} Q{(d.month - 1) // 3 + 1}"
        elif kind == "year":
            s = str(d.year)
        else:
            s = d.isoformat()
        return (s, s, s)
    if kind == "firstletter" and isinstance(v, str):
        c = v[:1].upper()
        return (c, c, c)
    if isinstance(v, str):
        return (v.casefold(), v, v)
    if isinstance(v, (dict, list)):
        return (repr(v), v, str(v))
    return (v, v, str(v))
