"""The cache's filter parser: a `read`/`summarize` filter tree validated against a schema.

Shape and type checking only (what the cache believes the site would refuse); the SQL
for a valid filter is built by `engine` and `relations`. This is the cache's reading of
the protocol, not the wire: the mock site parses filters with its own code
(`sgcache.mock.filters`), so a misreading here shows up in every differential test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..protocol import errors
from ..protocol.values import is_date, parse_datetime
from ..schema import FieldSchema, Schema

NUMERIC = ("number", "float", "currency", "percent", "duration", "timecode")
TEMPORAL = ("date", "date_time")
ORDERED = NUMERIC + TEMPORAL
TIME_UNITS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")

_EQ = {"is", "is_not"}
_IN = {"in", "not_in"}
_ORD = {"less_than", "greater_than", "between", "not_between"}
_TEXT = {"contains", "not_contains", "starts_with", "ends_with"}
_TIME = {"in_last", "not_in_last", "in_next", "not_in_next",
         "in_calendar_day", "in_calendar_week", "in_calendar_month", "in_calendar_year"}
_TYPE = {"type_is", "type_is_not"}
_NAME = {"name_contains", "name_not_contains", "name_starts_with", "name_ends_with", "name_is"}

#: Which relations the site accepts on each data type (protocol.md §5.1).
RELATIONS: dict[str, frozenset[str]] = {
    "text": frozenset(_EQ | _IN | _TEXT),
    "number": frozenset(_EQ | _IN | _ORD),
    "float": frozenset(_EQ | _IN | _ORD),
    "currency": frozenset(_EQ | _IN | _ORD),
    "percent": frozenset(_EQ | _IN | _ORD),
    "duration": frozenset(_EQ | _IN | _ORD),
    "timecode": frozenset(_EQ | _IN | _ORD),
    "date": frozenset(_EQ | _IN | _ORD | _TIME),
    "date_time": frozenset(_EQ | _IN | _ORD | _TIME),
    "checkbox": frozenset(_EQ),
    "list": frozenset(_EQ | _IN),
    "status_list": frozenset(_EQ | _IN),
    "entity_type": frozenset(_EQ | _IN),
    "color": frozenset(_EQ | _IN),
    "uuid": frozenset(_EQ | _IN),
    "footage": frozenset(_EQ | _IN),
    "image": frozenset(_EQ),
    "tag_list": frozenset(_EQ | {"name_contains", "name_not_contains", "name_is"}),
    "entity": frozenset(_EQ | _IN | _TYPE | _NAME),
    # `name_is` is documented for entity (and tag_list) only: elsewhere the site decides
    "multi_entity": frozenset(_EQ | _IN | _TYPE | (_NAME - {"name_is"})),
    "addressing": frozenset(_EQ | {"in", "contains", "not_contains"} | _TYPE | (_NAME - {"name_is"})),
}
ALL_RELATIONS: frozenset[str] = frozenset().union(*RELATIONS.values())


@dataclass(frozen=True)
class Hop:
    """One step of a deep path: follow `field` of `from_type`, landing on `to_type`."""

    from_type: str
    field: FieldSchema
    to_type: str


@dataclass(frozen=True)
class FieldPath:
    """A resolved (possibly deep-linked) field path such as `entity.Shot.code`."""

    text: str
    root_type: str
    hops: tuple[Hop, ...]
    field: FieldSchema

    @property
    def is_deep(self) -> bool:
        return bool(self.hops)


@dataclass(frozen=True)
class Condition:
    path: FieldPath
    relation: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Group:
    op: str  # "and" | "or"
    conditions: tuple[Union["Condition", "Group"], ...]


def resolve_path(schema: Schema, entity_type: str, path: Any, method: str = "read") -> FieldPath:
    """Resolve `a.Type.b.Type2.c` against the schema, faulting as the site does."""
    if not isinstance(path, str) or not path:
        raise errors.bad_filter(method, f"path must be a non-empty string, got {path!r}")
    parts = path.split(".")
    if len(parts) % 2 == 0:
        raise errors.bad_filter(method, f"malformed deep-link path '{path}'")
    if entity_type not in schema:
        raise errors.unknown_entity_type(method, entity_type)
    hops: list[Hop] = []
    cur = entity_type
    for i in range(0, len(parts) - 1, 2):
        fname, target = parts[i], parts[i + 1]
        fs = schema.get_field(cur, fname)
        if fs is None:
            raise errors.unknown_field(method, cur, fname)
        if not fs.is_link:
            raise errors.bad_filter(method, f"field '{cur}.{fname}' in path '{path}' is not a link")
        if target not in schema:
            raise errors.unknown_entity_type(method, target)
        if fs.valid_types and target not in fs.valid_types:
            raise errors.bad_filter(method, f"'{target}' is not a valid type for '{cur}.{fname}' in path '{path}'")
        hops.append(Hop(cur, fs, target))
        cur = target
    fs = schema.get_field(cur, parts[-1])
    if fs is None:
        raise errors.unknown_field(method, cur, parts[-1])
    return FieldPath(path, entity_type, tuple(hops), fs)


def parse_filters(schema: Schema, entity_type: str, filters: Any, method: str = "read") -> Group:
    """Parse the wire filter tree into a validated Group. Empty/None means match all."""
    if filters is None or filters == [] or filters == {}:
        return Group("and", ())
    return _parse_group(schema, entity_type, filters, method, depth=0)


MAX_DEPTH = 32


def _parse_group(schema: Schema, etype: str, node: Any, method: str, depth: int) -> Group:
    if depth > MAX_DEPTH:
        raise errors.bad_filter(method, "filters are nested too deeply")
    if isinstance(node, list):  # tolerate a bare list of conditions: "and"
        node = {"logical_operator": "and", "conditions": node}
    if not isinstance(node, dict):
        raise errors.bad_filter(method, f"expected a filter group, got {type(node).__name__}")
    op = node.get("logical_operator", "and")
    if op not in ("and", "or"):
        raise errors.bad_filter(method, f"unknown logical_operator {op!r}")
    conds = node.get("conditions", [])
    if not isinstance(conds, list):
        raise errors.bad_filter(method, "'conditions' must be a list")
    out: list[Condition | Group] = []
    for c in conds:
        if isinstance(c, dict) and "conditions" in c:
            out.append(_parse_group(schema, etype, c, method, depth + 1))
        else:
            out.append(_parse_condition(schema, etype, c, method))
    return Group(op, tuple(out))


def _parse_condition(schema: Schema, etype: str, c: Any, method: str) -> Condition:
    # only the server format (protocol.md §4.2): a `[path, relation, value]` list is what the
    # client translates, never what it sends, so how the site takes one is its own to decide
    if not isinstance(c, dict) or "path" not in c or "relation" not in c:
        # the condition itself is not echoed: this reason is logged, and values may be secrets
        raise errors.bad_filter(method, f"malformed condition: expected an object with 'path' and 'relation', "
                                        f"got {type(c).__name__}")
    path = resolve_path(schema, etype, c["path"], method)
    relation = c["relation"]
    values = c.get("values", [])
    if not isinstance(values, list):
        values = [values]
    dt = path.field.data_type
    if not isinstance(relation, str) or relation not in ALL_RELATIONS:
        raise errors.bad_filter(method, f"unknown relation {relation!r} for field '{path.text}'")
    if relation not in RELATIONS.get(dt, frozenset()):
        raise errors.bad_relation(method, relation, dt, path.text)
    _check_values(path, relation, values, method)
    return Condition(path, relation, tuple(values))


def _check_values(path: FieldPath, relation: str, values: list[Any], method: str) -> None:
    dt = path.field.data_type
    name = path.text

    def need(n: int) -> None:
        if len(values) != n:
            raise errors.bad_filter(method, f"relation '{relation}' on '{name}' takes {n} value(s), got {len(values)}")

    if relation in _EQ | _TEXT | _TYPE | _NAME | {"less_than", "greater_than"}:
        need(1)
    elif relation in ("between", "not_between"):
        need(2)
    elif relation in ("in_last", "not_in_last", "in_next", "not_in_next"):
        need(2)
        n, unit = values
        if not isinstance(n, int) or isinstance(n, bool) or unit not in TIME_UNITS:
            raise errors.bad_filter(method, f"relation '{relation}' on '{name}' expects [count, {'|'.join(TIME_UNITS)}]")
        return
    elif relation.startswith("in_calendar_"):
        need(1)
        if not isinstance(values[0], int) or isinstance(values[0], bool):
            raise errors.bad_filter(method, f"relation '{relation}' on '{name}' expects an integer offset")
        return
    elif relation in _IN:
        if not values:
            raise errors.bad_filter(method, f"relation '{relation}' on '{name}' needs at least one value")

    if relation in _TEXT | _NAME:
        if not isinstance(values[0], str) and values[0] is not None:
            raise errors.bad_value(method, name, dt, values[0])
        return
    if relation in _TYPE:
        if values[0] is not None and not isinstance(values[0], str):
            raise errors.bad_value(method, name, dt, values[0])
        return
    for v in values:
        if v is None:
            if relation in ("less_than", "greater_than"):
                raise errors.bad_value(method, name, dt, v)
            if dt == "checkbox":
                raise errors.bad_value(method, name, dt, v)
            continue
        check_scalar(dt, v, method, name, filtering=True)
    if dt == "image" and values[0] is not None:
        raise errors.bad_filter(method, f"field '{name}' of type 'image' can only be compared with null")


def check_scalar(dt: str, v: Any, method: str, name: str, filtering: bool = False) -> None:
    """Fault if `v` is not a valid non-null wire value for data type `dt`."""
    ok = True
    if dt in ("number", "percent", "duration", "timecode"):
        ok = isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63
    elif dt in ("float", "currency"):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    elif dt == "checkbox":
        ok = isinstance(v, bool)
    elif dt in ("text", "list", "status_list", "entity_type", "color", "uuid", "footage", "image"):
        ok = isinstance(v, str)
    elif dt == "date":
        ok = is_date(v)
    elif dt == "date_time":
        ok = parse_datetime(v) is not None
    elif dt in ("entity", "multi_entity", "addressing"):
        ok = (isinstance(v, dict) and isinstance(v.get("type"), str)
              and isinstance(v.get("id"), int) and not isinstance(v.get("id"), bool))
    elif dt == "tag_list":
        ok = isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("id"), int))
    if not ok:
        raise errors.bad_value(method, name, dt, v)
