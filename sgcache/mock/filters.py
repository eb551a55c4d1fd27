"""The mock site's own reading of api3 filters: the tree, its paths, what is refused.

Written from the protocol reference (protocol.md §4.2 the server format the client
sends, §4.4 deep paths, §5.1 relations per data type and their value shapes) and the
client's `_translate_filters`, *not* from the cache's parser (`sgcache/read/filters.py`):
the differential tests compare the two, so they share no code. `query` evaluates what
this module accepts; everything refused here is a Fault, as the site answers it.

The tree on the wire is `{"logical_operator": "and"|"or", "conditions": [...]}`, each
condition `{"path", "relation", "values": [...]}` and a nested group any item that has
`conditions`. A path is `field` or `link.Type.field` chained, checked against the schema:
every hop a link field whose valid types include `Type`.

Choices where the reference is silent (the cache may be stricter; it then passes through):
* `values` must hold exactly one item for single-value relations, two for `between` and
  the `in_last` family, at least one for `in`/`not_in`.
* A filter on a checkbox with `null` is accepted and matches nothing (`is`), everything
  (`is_not`): a checkbox is never empty (mockgun compares `value == None` the same way).
* `type_is` names are not checked against the schema; an unknown type matches nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..protocol import errors
from ..protocol.values import is_date, parse_datetime
from ..schema import LINK_TYPES, FieldSchema, Schema

#: Nesting deeper than this is refused (the client never builds it; it bounds recursion).
DEPTH_LIMIT = 32
TIME_UNITS = frozenset({"HOUR", "DAY", "WEEK", "MONTH", "YEAR"})

_NUMBERS = ("number", "float", "currency", "percent", "duration", "timecode")
_ORDERED = _NUMBERS + ("date", "date_time")
_TEXTUAL = ("text", "list", "status_list", "entity_type", "color", "uuid", "footage")
_LINKS = ("entity", "multi_entity", "addressing")
#: Every type a filter may name (protocol.md §5.1: not password, serializable, url, UI-only).
_FILTERABLE = _ORDERED + _TEXTUAL + _LINKS + ("checkbox", "image", "tag_list")

#: relation -> the data types it is accepted on; read relation by relation off §5.1.
TYPES_OF: dict[str, tuple[str, ...]] = {
    "is": _FILTERABLE,
    "is_not": _FILTERABLE,
    "less_than": _ORDERED,
    "greater_than": _ORDERED,
    "between": _ORDERED,
    "not_between": _ORDERED,
    "contains": ("text", "addressing"),
    "not_contains": ("text", "addressing"),
    "starts_with": ("text",),
    "ends_with": ("text",),
    "in": _NUMBERS + ("date", "date_time") + _TEXTUAL + _LINKS,
    "not_in": _NUMBERS + ("date", "date_time") + _TEXTUAL + ("entity", "multi_entity"),
    "type_is": _LINKS,
    "type_is_not": _LINKS,
    "name_contains": _LINKS + ("tag_list",),
    "name_not_contains": _LINKS + ("tag_list",),
    "name_starts_with": _LINKS,
    "name_ends_with": _LINKS,
    # §5.1: entity; `name_id` on tag_list in the reference is read as a typo of name_is
    "name_is": ("entity", "tag_list"),
    **{r: ("date", "date_time") for r in (
        "in_last", "not_in_last", "in_next", "not_in_next",
        "in_calendar_day", "in_calendar_week", "in_calendar_month", "in_calendar_year")},
}

#: data type -> the relations it accepts (the table above, turned round).
RELATIONS: dict[str, frozenset[str]] = {
    t: frozenset(r for r, ts in TYPES_OF.items() if t in ts) for t in _FILTERABLE}
TIME_RELATIONS = frozenset(r for r in TYPES_OF if r.endswith(("_last", "_next")) or r.startswith("in_calendar_"))


@dataclass(frozen=True)
class Step:
    """One hop of a deep path: the link field followed and the type landed on."""

    link: FieldSchema
    target: str


@dataclass(frozen=True)
class Path:
    """A field path resolved against the schema: `entity.Shot.sg_sequence.Sequence.code`."""

    text: str
    entity_type: str
    steps: tuple[Step, ...]
    leaf: FieldSchema


@dataclass(frozen=True)
class Clause:
    """One condition: a path, a relation and its values as sent."""

    path: Path
    relation: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Node:
    """A group of clauses and groups joined by `and` or `or` (empty: everything matches)."""

    operator: str
    children: tuple[Clause | Node, ...]


MATCH_ALL = Node("and", ())


def resolve(schema: Schema, entity_type: str, text: Any, method: str = "read") -> Path:
    """The path `text` on `entity_type`, or the site's Fault for an unknown field or hop."""
    if entity_type not in schema:
        raise errors.unknown_entity_type(method, entity_type)
    if not isinstance(text, str) or text == "":
        raise errors.bad_filter(method, f"path must be a non-empty string, got {text!r}")
    pieces = text.split(".")
    if len(pieces) % 2 != 1:  # field(.Type.field)*
        raise errors.bad_filter(method, f"malformed deep-link path '{text}'")
    steps: list[Step] = []
    here = entity_type
    while len(pieces) > 1:
        link_name, target = pieces.pop(0), pieces.pop(0)
        link = schema.get_field(here, link_name)
        if link is None:
            raise errors.unknown_field(method, here, link_name)
        if link.data_type not in LINK_TYPES:
            raise errors.bad_filter(method, f"field '{here}.{link_name}' in path '{text}' is not a link")
        if target not in schema:
            raise errors.unknown_entity_type(method, target)
        if link.valid_types and target not in link.valid_types:
            raise errors.bad_filter(method, f"'{target}' is not a valid type for '{here}.{link_name}' "
                                            f"in path '{text}'")
        steps.append(Step(link, target))
        here = target
    leaf = schema.get_field(here, pieces[0])
    if leaf is None:
        raise errors.unknown_field(method, here, pieces[0])
    return Path(text, entity_type, tuple(steps), leaf)


def parse(schema: Schema, entity_type: str, tree: Any, method: str = "read") -> Node:
    """The validated filter tree; a missing or empty filter matches everything."""
    if tree is None or tree == {} or tree == []:
        return MATCH_ALL
    return _node(schema, entity_type, tree, method, 0)


def _node(schema: Schema, entity_type: str, tree: Any, method: str, depth: int) -> Node:
    if depth > DEPTH_LIMIT:
        raise errors.bad_filter(method, "filters are nested too deeply")
    if isinstance(tree, list):  # a bare list of conditions is tolerated as their "and"
        tree = {"conditions": tree}
    if not isinstance(tree, dict):
        raise errors.bad_filter(method, f"expected a filter group, got {type(tree).__name__}")
    operator = tree.get("logical_operator", "and")
    if operator not in ("and", "or"):
        raise errors.bad_filter(method, f"unknown logical_operator {operator!r}")
    items = tree.get("conditions", [])
    if not isinstance(items, list):
        raise errors.bad_filter(method, "'conditions' must be a list")
    children: list[Clause | Node] = []
    for item in items:
        if isinstance(item, dict) and "conditions" in item:
            children.append(_node(schema, entity_type, item, method, depth + 1))
        else:
            children.append(_clause(schema, entity_type, item, method))
    return Node(operator, tuple(children))


def _clause(schema: Schema, entity_type: str, item: Any, method: str) -> Clause:
    if not isinstance(item, dict) or "path" not in item or "relation" not in item:
        raise errors.bad_filter(method, f"malformed condition {item!r}")
    path = resolve(schema, entity_type, item["path"], method)
    relation = item["relation"]
    if not isinstance(relation, str) or relation not in TYPES_OF:
        raise errors.bad_filter(method, f"unknown relation {relation!r} for field '{path.text}'")
    data_type = path.leaf.data_type
    if data_type not in TYPES_OF[relation]:
        raise errors.bad_relation(method, relation, data_type, path.text)
    values = item.get("values", [])
    values = list(values) if isinstance(values, list) else [values]
    _check(path, relation, values, method)
    return Clause(path, relation, tuple(values))


def _arity(relation: str) -> tuple[int, int | None]:
    """(fewest, most) values a relation takes."""
    if relation in ("in", "not_in"):
        return 1, None
    if relation in ("between", "not_between", "in_last", "not_in_last", "in_next", "not_in_next"):
        return 2, 2
    return 1, 1


def _check(path: Path, relation: str, values: list[Any], method: str) -> None:
    """Fault unless `values` has the shape §5.1 gives this relation on this type."""
    name, data_type = path.text, path.leaf.data_type
    fewest, most = _arity(relation)
    if len(values) < fewest or (most is not None and len(values) > most):
        want = f"{fewest}" if fewest == most else f"at least {fewest}"
        raise errors.bad_filter(method, f"relation '{relation}' on '{name}' takes {want} value(s), "
                                        f"got {len(values)}")
    if relation in ("in_last", "not_in_last", "in_next", "not_in_next"):
        count, unit = values
        if not _is_int(count) or not isinstance(unit, str) or unit not in TIME_UNITS:
            raise errors.bad_filter(method, f"relation '{relation}' on '{name}' expects "
                                            f"[count, {'|'.join(sorted(TIME_UNITS))}]")
        return
    if relation.startswith("in_calendar_"):
        if not _is_int(values[0]):
            raise errors.bad_filter(method, f"relation '{relation}' on '{name}' expects an integer offset")
        return
    if relation.startswith(("name_", "type_")) or relation in ("contains", "not_contains",
                                                                 "starts_with", "ends_with"):
        # a piece of text (a name, a type name); null reads as empty text
        if values[0] is not None and not isinstance(values[0], str):
            raise errors.bad_value(method, name, data_type, values[0])
        return
    for v in values:
        if v is None:
            if relation in ("less_than", "greater_than"):  # nothing is less than null
                raise errors.bad_value(method, name, data_type, v)
            continue
        if data_type == "image":  # §5.1: images compare with null only
            raise errors.bad_filter(method, f"field '{name}' of type 'image' can only be compared with null")
        if not valid_value(data_type, v):
            raise errors.bad_value(method, name, data_type, v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def valid_value(data_type: str, v: Any) -> bool:
    """Whether non-null `v` is a wire value of `data_type` (protocol.md §6.2), for filters and writes."""
    if data_type in ("number", "percent", "duration", "timecode"):
        return _is_int(v) and -(2 ** 63) <= v < 2 ** 63
    if data_type in ("float", "currency"):
        return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)
    if data_type == "checkbox":
        return isinstance(v, bool)
    if data_type == "date":
        return is_date(v)
    if data_type == "date_time":
        return parse_datetime(v) is not None
    if data_type in _TEXTUAL or data_type == "image":
        return isinstance(v, str)
    if data_type in _LINKS:
        return isinstance(v, dict) and isinstance(v.get("type"), str) and _is_int(v.get("id"))
    if data_type == "tag_list":  # a tag by name, or a Tag entity
        return isinstance(v, str) or (isinstance(v, dict) and _is_int(v.get("id")))
    return True


def check_scalar(data_type: str, v: Any, method: str, name: str) -> None:
    """Fault, as the site words it, unless non-null `v` is a wire value of `data_type`."""
    if not valid_value(data_type, v):
        raise errors.bad_value(method, name, data_type, v)
