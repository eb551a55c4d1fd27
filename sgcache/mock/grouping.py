"""The mock site's `summarize` groups: which group a value falls in, its label and its place.

From protocol.md §5.3 (and the `summarize` docstring of the client): summary and grouping
type names, `group_value` of a link `{"type", "id", "name", "valid": "valid"}` with the
display name as `group_name`. The cache builds its groups on its own
(`sgcache/read/grouping.py`); the differential tests compare the two.

Choices where the reference is silent:
* Number buckets (`tens` ... `millions`) start at floor(value / size) * size and are
  named `"lo - hi"` (`"20 - 29"`).
* Date periods work on the date part of the value (UTC for date_time): `day`, `oneday`,
  `fivedays` and `clustered_date` by day `YYYY-MM-DD`, `week` by its Monday, `month`
  `YYYY-MM`, `quarter` `YYYY Qn`, `year` `YYYY`.
* Text groups ignore case; a group keeps the first spelling met in id order.
* `firstletter` is the upper-cased first character; `entitytype` the linked type.
* Groups sort by their value, the empty group (`group_value` null, `group_name` "")
  first ascending and last descending; link groups by linked type, then id (the one
  documented example orders Step groups by id, not by name).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SUMMARY_TYPES: tuple[str, ...] = (
    "record_count", "count", "sum", "maximum", "minimum", "average", "earliest", "latest",
    "percentage", "status_percentage", "status_list", "checked", "unchecked")
NUMBER_BUCKETS: dict[str, int] = {
    "tens": 10, "hundreds": 100, "thousands": 1_000, "tensofthousands": 10_000,
    "hundredsofthousands": 100_000, "millions": 1_000_000}
DATE_PERIODS: tuple[str, ...] = ("day", "week", "month", "quarter", "year", "clustered_date", "oneday",
                                 "fivedays")
GROUP_TYPES: tuple[str, ...] = ("exact", "entitytype", "firstletter", *NUMBER_BUCKETS, *DATE_PERIODS)


@dataclass(frozen=True)
class Bucket:
    """One group: what it sorts and merges by, its `group_value` and its `group_name`."""

    key: Any
    value: Any
    name: Any


#: Records whose value is empty (null, no links, no tags).
NO_VALUE = Bucket(None, None, "")


def for_link(kind: str, entity_type: str, entity_id: int, name: Any) -> Bucket:
    """The group of a record linking to one live entity."""
    if kind == "entitytype":
        return Bucket(entity_type, entity_type, entity_type)
    if kind == "firstletter":
        letter = _first_letter("" if name is None else str(name))
        return Bucket(letter, letter, letter)
    # by type and id, not by name: the client's own example groups Steps Client (1), Online (2),
    # ..., Comp (8) (shotgun_api3 `summarize` docstring), which no name order gives
    return Bucket((entity_type, entity_id),
                  {"type": entity_type, "id": entity_id, "name": name, "valid": "valid"}, name)


def for_tags(tags: Iterable[str]) -> list[Bucket]:
    """A record falls in one group per tag it carries (the empty group if none)."""
    out = [Bucket(t.casefold(), t, t) for t in tags]
    return out or [NO_VALUE]


def for_value(kind: str, v: Any) -> Bucket:
    """The group of a plain (non-link, non-tag) value."""
    if v is None:
        return NO_VALUE
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind in NUMBER_BUCKETS and number:
        size = NUMBER_BUCKETS[kind]
        low = int(v // size) * size
        return Bucket(low, low, f"{low} - {low + size - 1}")
    if kind in DATE_PERIODS and isinstance(v, str):
        label = _period(kind, v)
        if label is not None:
            return Bucket(label, label, label)
    if kind == "firstletter" and isinstance(v, str):
        letter = _first_letter(v)
        return Bucket(letter, letter, letter)
    if isinstance(v, str):
        return Bucket(v.casefold(), v, v)
    if isinstance(v, (dict, list)):  # structured values group by their text
        return Bucket(repr(v), v, str(v))
    return Bucket(v, v, str(v))


def in_order(keys: Iterable[Any], descending: bool) -> list[Any]:
    """Group keys in result order: the empty group first ascending, last descending."""
    return sorted(keys, key=lambda k: (0, 0) if k is None else (1, k), reverse=descending)


def _first_letter(text: str) -> str:
    return text[:1].upper()


def _period(kind: str, v: str) -> str | None:
    """The label of the date period holding the date (or date_time) `v`; None if not a date."""
    if len(v) < 10:
        return None
    try:
        day = dt.date.fromisoformat(v[:10])
    except ValueError:
        return v  # text that only looks like a date groups as itself
    if kind == "week":
        return (day - dt.timedelta(days=day.weekday())).isoformat()
    if kind == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if kind == "quarter":
        return f"{day.year} Q{(day.month + 2) // 3}"
    if kind == "year":
        return str(day.year)
    return day.isoformat()
