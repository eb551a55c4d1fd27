"""A type page's address (columns, filters, sort, page, search) -> an api3 read request.

The browser never writes SQL: what a person picks on a page becomes the same `read`
params a `shotgun_api3` client would send, answered by the same read engine under the
same permission policy. The relations offered per field are the site's (filters.RELATIONS)
that the engine answers locally (relations.builder_for): the ones that work offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ...read.filters import RELATIONS
from ...read.names import name_field
from ...read.relations import SORTABLE, TIME_RELATIONS, builder_for
from ...schema import FieldSchema
from ...store.tables import EntityTable

PER_PAGE = 50
MAX_FILTERS = 8
MAX_COLUMNS = 20
#: Fields shown by default after the name, when the type has them.
DEFAULT_COLUMNS = ("sg_status_list", "project", "entity", "sg_sequence", "task_assignees", "step",
                   "description", "updated_at")
#: Relation -> what the page calls it.
LABELS: dict[str, str] = {
    "is": "is", "is_not": "is not", "in": "is any of", "not_in": "is none of",
    "contains": "contains", "not_contains": "does not contain", "starts_with": "starts with",
    "ends_with": "ends with", "less_than": "less than", "greater_than": "greater than",
    "between": "between", "not_between": "not between", "type_is": "type is", "type_is_not": "type is not",
    "name_contains": "name contains", "name_not_contains": "name does not contain",
    "name_starts_with": "name starts with", "name_ends_with": "name ends with", "name_is": "name is",
}
LIST_RELATIONS = frozenset({"in", "not_in", "between", "not_between"})
NUMERIC = ("number", "float", "currency", "percent", "duration", "timecode")


class BadFilter(ValueError):
    """A filter the page cannot turn into a request: shown to the person, not raised further."""


def relations_for(table: EntityTable, fname: str) -> list[str]:
    """Relations the site accepts on this field and the engine answers locally, in LABELS order."""
    ft = table.fields.get(fname)
    if ft is None:
        return []
    allowed = RELATIONS.get(ft.fs.data_type, frozenset()) - TIME_RELATIONS
    return [r for r in LABELS if r in allowed and builder_for(ft, r) is not None]


def sortable(table: EntityTable, fname: str) -> bool:
    ft = table.fields.get(fname)
    return fname == "id" or (ft is not None and isinstance(ft, SORTABLE))


@dataclass
class Filter:
    field: str
    relation: str
    text: str


@dataclass
class TypeQuery:
    """What a type page shows, parsed from its query string."""

    columns: list[str]
    filters: list[Filter] = field(default_factory=list)
    sort: str | None = None
    descending: bool = False
    page: int = 1
    search: str = ""
    errors: list[str] = field(default_factory=list)

    def link(self, **changes: Any) -> str:
        """This page's query string with some parts changed (sort links, paging links)."""
        from urllib.parse import urlencode
        state: dict[str, Any] = {"cols": ",".join(self.columns), "q": self.search,
                                 "sort": ("-" if self.descending else "") + self.sort if self.sort else "",
                                 "page": self.page}
        state.update(changes)
        pairs: list[tuple[str, Any]] = [(k, v) for k, v in state.items() if v not in ("", None, 1)]
        for f in self.filters:
            pairs += [("f", f.field), ("op", f.relation), ("v", f.text)]
        return "?" + urlencode(pairs)


def default_columns(table: EntityTable, etype: str) -> list[str]:
    cols = []
    nf = name_field(table.entity, etype)
    if nf and nf in table.fields:
        cols.append(nf)
    cols += [f for f in DEFAULT_COLUMNS if f in table.fields and f not in cols]
    return cols[:6] or sorted(table.fields)[:5]


def parse_type_query(table: EntityTable, etype: str, args: Mapping[str, Any], multi: Any) -> TypeQuery:
    """The page's state from its query string; unknown fields and junk are dropped quietly,
    unusable filters are kept (the form shows them back) with an error."""
    prior = str(args.get("cols") or "").split(",")  # the link's columns, in their order
    boxes = multi("col")  # the form's ticked boxes: keep the prior order, new ones at the end
    picked = [c for c in prior if c in boxes] + [c for c in boxes if c not in prior] if boxes else prior
    cols = [c for c in dict.fromkeys(picked) if c in table.fields][:MAX_COLUMNS]
    tq = TypeQuery(cols or default_columns(table, etype))
    tq.search = str(args.get("q") or "").strip()[:200]
    sort = str(args.get("sort") or "")
    if (sort.lstrip("-") in table.fields or sort.lstrip("-") == "id") and sortable(table, sort.lstrip("-")):
        tq.sort, tq.descending = sort.lstrip("-"), sort.startswith("-")
    try:
        tq.page = max(1, min(100_000, int(args.get("page") or 1)))
    except ValueError:
        tq.page = 1
    fs, ops, vs = multi("f"), multi("op"), multi("v")
    for fname, rel, text in list(zip(fs, ops, vs))[:MAX_FILTERS]:
        if not fname:
            continue
        tq.filters.append(Filter(fname, rel, text))
    return tq


def _value(fs: FieldSchema, relation: str, text: str) -> Any:
    """One typed value, as a `shotgun_api3` caller would write it."""
    dt = fs.data_type
    text = text.strip()
    if relation in ("type_is", "type_is_not") or relation.startswith("name_"):
        return text
    if text == "" and relation in ("is", "is_not"):
        return None
    if dt in NUMERIC:
        try:
            return float(text) if dt in ("float", "currency", "percent") or "." in text else int(text)
        except ValueError:
            raise BadFilter(f"{fs.display_name or fs.name}: {text!r} is not a number") from None
    if dt == "checkbox":
        low = text.lower()
        if low in ("true", "yes", "1", "on", "checked"):
            return True
        if low in ("false", "no", "0", "off", "unchecked"):
            return False
        raise BadFilter(f"{fs.display_name or fs.name}: write yes or no")
    if dt in ("entity", "multi_entity", "addressing"):
        kind, _, num = text.replace(":", " ").replace("/", " ").rpartition(" ")
        kind = kind.strip() or (fs.valid_types[0] if len(fs.valid_types) == 1 else "")
        if not kind or not num.isdigit():
            raise BadFilter(f"{fs.display_name or fs.name}: write a link as Type/id (e.g. Shot/12), "
                            "or filter by name")
        return {"type": kind, "id": int(num)}
    return text


def filter_conditions(table: EntityTable, etype: str, tq: TypeQuery) -> list[dict[str, Any]]:
    """The api3 conditions of the page's filters and search; bad ones are noted in tq.errors."""
    conds: list[dict[str, Any]] = []
    for f in tq.filters:
        fs = table.entity.fields.get(f.field)
        if fs is None or f.field not in table.fields:
            tq.errors.append(f"{f.field}: not a cached field of {etype}")
            continue
        if f.relation not in relations_for(table, f.field):
            tq.errors.append(f"{fs.display_name or fs.name}: cannot be filtered with "
                             f"“{LABELS.get(f.relation, f.relation)}” offline")
            continue
        try:
            if f.relation in LIST_RELATIONS:
                values = [_value(fs, f.relation, t) for t in f.text.split(",") if t.strip()]
                if f.relation in ("between", "not_between") and len(values) != 2:
                    raise BadFilter(f"{fs.display_name or fs.name}: between needs two values: low, high")
            else:
                values = [_value(fs, f.relation, f.text)]
        except BadFilter as e:
            tq.errors.append(str(e))
            continue
        conds.append({"path": f.field, "relation": f.relation, "values": values})
    if tq.search:
        nf = name_field(table.entity, etype)
        if nf and nf in table.fields:
            conds.append({"path": nf, "relation": "contains", "values": [tq.search]})
    return conds


def read_params(table: EntityTable, etype: str, tq: TypeQuery) -> dict[str, Any]:
    """The api3 `read` this page is: a client could send it as is."""
    sorts = [{"field_name": tq.sort, "direction": "desc" if tq.descending else "asc"}] if tq.sort else []
    return {"type": etype, "return_fields": list(tq.columns),
            "filters": {"logical_operator": "and", "conditions": filter_conditions(table, etype, tq)},
            "sorts": sorts, "paging": {"entities_per_page": PER_PAGE, "current_page": tq.page},
            "return_only": "active", "return_paging_info": True}
