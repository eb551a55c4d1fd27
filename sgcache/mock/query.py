"""Query evaluation for the mock site, in plain Python over the store.

Deliberately independent of the cache: the mock is the reference that cached answers
are compared with. Filters are parsed and checked by the mock's own ``filters`` module,
link names come from its own ``names`` module, and both are compiled here into Python
predicates; nothing here is shared with ``sgcache.read``.

Semantics chosen where the site's behaviour is not documented (the cache matches
these):

* Text-like values (text, list, status_list, entity_type, color, uuid, footage,
  tag names, link names) compare case-insensitively via ``str.casefold``.
* ``is None`` matches null only (``0`` and ``""`` are not null); ``is_not X``,
  ``not_in``, ``not_contains`` and ``name_not_contains`` include nulls; for
  ``contains``/``starts_with``/``ends_with`` a null text behaves as ``""``.
  Ordering relations (``less_than``, ``greater_than``, ``between``,
  ``not_between``, time relations and their negations) never match null.
  ``between`` is inclusive and a null bound is open. A null checkbox is False.
* Multi-entity and tag_list: ``is`` means contains, ``is None`` means empty.
* Links to retired entities count as absent (null / not in the list).
* Deep paths (``entity.Shot.code``): a condition matches if *any* record
  reached through the links matches (any-match through multi-entity hops); a
  path through an empty link or a link of another type never matches.
* ``in_last``/``in_next``/``in_calendar_*`` use UTC; weeks start on Monday;
  windows are inclusive at both ends and ``in_next`` starts now (this second).
* ``include_archived_projects: false`` hides records whose own ``project`` field
  links a Project with ``archived`` true; Project records themselves stay.
* ``additional_filter_presets`` are validated and then refused with a Fault (no
  preset is implemented).
* Sorting: multi-key, first key primary; **nulls first in ascending order and
  last in descending order**; text-like values (including list and status_list,
  alphabetically, not in valid_values order) sort case-insensitively; entity links
  sort by (name, type, id), multi-entity fields by their list of those, tag lists
  by their sorted folded tags, a null checkbox as False; a deep sort field uses the
  first record reached; ties are broken by id ascending; default order is id asc.
  Sorting on password, serializable and UI-only fields is a Fault.
* Deep return fields follow single-entity links only; a path through a
  multi-entity field, an empty link or a link of another type returns null, and
  so does a deep field that does not resolve against the schema. An unknown
  plain return field is a Fault.
* Links to a retired entity are hidden: an entity field reads null, a
  multi-entity field leaves it out (so an event about an entity retired now
  reads back with ``entity: null``).

Why one module of ~690 lines: filters, deep paths, sorting, paging and rendering of the
mock share one in-memory record model; kept together, the mock's semantics read top to
bottom as a specification.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator

from ..protocol import errors
from ..protocol.values import utcnow
from .filters import TIME_RELATIONS, Clause, Node, Path, parse, resolve
from .names import display_field
from .store import Store

Pred = Callable[[dict[str, Any]], bool]
Test = Callable[[Any], bool]

STRINGY = frozenset({"text", "list", "status_list", "entity_type", "color", "uuid", "footage"})
NUMERIC = frozenset({"number", "float", "currency", "percent", "duration", "timecode"})
TEMPORAL = frozenset({"date", "date_time"})
MULTI = frozenset({"multi_entity", "addressing"})
UNREADABLE = frozenset({"pivot_column", "summary", "calculated", "query"})


def fold(v: Any) -> Any:
    return v.casefold() if isinstance(v, str) else v


def empty_value(data_type: str) -> Any:
    """What a field never written reads as."""
    if data_type in MULTI or data_type == "tag_list":
        return []
    return None


#: `Engine._target_name` of a link to nothing live; and a target not looked up yet.
_GONE = object()
_UNSEEN = object()


def _same(x: Any) -> Any:
    """The formatter of values stored as the site shows them."""
    return x


class Engine:
    """Filters, sorts, pages and renders records of one store."""

    CACHE_SIZE = 64

    def __init__(self, store: Store, base_url: Callable[[], str] = lambda: "") -> None:
        self.store = store
        self.base_url = base_url
        self._ids_cache: OrderedDict[Any, tuple[Any, list[int]]] = OrderedDict()
        self._paths: dict[tuple[int, str, str], Path] = {}
        self._name_fields: dict[tuple[int, str], str | None] = {}

    # -- helpers shared with writes/summaries -------------------------------------
    def path(self, entity_type: str, text: Any, method: str = "read") -> Path:
        key = (self.store.schema_version, entity_type, text) if isinstance(text, str) else None
        fp = self._paths.get(key) if key else None
        if fp is None:
            if len(self._paths) > 4096:
                self._paths.clear()
            fp = resolve(self.store.schema, entity_type, text, method)
            self._paths[key] = fp  # type: ignore[index]
        return fp

    def name_of(self, entity_type: str, entity_id: int) -> Any:
        """Display name of a linked entity (its `code`, `name`, `content` ...)."""
        nf = self._name_field(entity_type)
        rec = self.store.get(entity_type, entity_id)
        if rec is None or nf is None:
            return None
        return rec.get(nf)

    def shown(self, link: Any) -> dict[str, Any] | None:
        """A stored link as the site shows it (type, id, display name); None unless it points
        at a live entity. `live` and `name_of` in one pass: a page renders thousands."""
        if not isinstance(link, dict):
            return None
        etype, eid = link.get("type"), link.get("id")
        name = self._target_name(etype, eid)
        return None if name is _GONE else {"type": etype, "id": eid, "name": name}

    def _target_name(self, etype: Any, eid: Any) -> Any:
        """The display name of a link's target, or _GONE when it is not a live entity."""
        table = self.store.tables.get(etype)
        rec = table.get(eid) if table is not None else None
        if rec is None or eid in self.store.retired.get(etype, ()):
            return _GONE
        nf = self._name_field(etype)
        return None if nf is None else rec.get(nf)

    def answer_shown(self) -> Callable[[Any], dict[str, Any] | None]:
        """`shown` for one read's answer, rendered with nothing written meanwhile (the store
        is locked): a page's links mostly point at the same few targets (its project, users,
        steps), so each target is looked up and rendered once per answer. The answer is
        encoded, never edited in place (`permissions.View.scrub` replaces values, it never
        changes a link), so one dict may stand for one target throughout it."""
        seen: dict[Any, dict[Any, Any]] = {}
        target_name = self._target_name

        def shown(link: Any) -> dict[str, Any] | None:
            if not isinstance(link, dict):
                return None
            etype, eid = link.get("type"), link.get("id")
            if type(eid) is not int:  # True == 1 and 1.0 == 1 as keys, but each is shown as stored
                return self.shown(link)
            per = seen.get(etype)
            if per is None:
                per = seen[etype] = {}
            got = per.get(eid, _UNSEEN)
            if got is _UNSEEN:
                name = target_name(etype, eid)
                got = per[eid] = None if name is _GONE else {"type": etype, "id": eid, "name": name}
            return got
        return shown

    def _name_field(self, entity_type: str) -> str | None:
        """The field naming links to this type, cached per schema version."""
        key = (self.store.schema_version, entity_type)
        if key not in self._name_fields:
            if len(self._name_fields) > 4096:
                self._name_fields.clear()
            self._name_fields[key] = display_field(entity_type, self.store.schema.entities.get(entity_type))
        return self._name_fields[key]

    def live(self, link: Any) -> bool:
        return (isinstance(link, dict) and link.get("id") in self.store.tables.get(link.get("type"), ())
                and not self.store.is_retired(link["type"], link["id"]))

    def links(self, value: Any) -> list[dict[str, Any]]:
        """Live links held by an entity or multi-entity value."""
        if value is None:
            return []
        if isinstance(value, dict):
            return [value] if self.live(value) else []
        return [v for v in value if self.live(v)]

    def follow(self, rec: dict[str, Any], fp: Path) -> list[dict[str, Any]]:
        """Records reached from `rec` through the path's hops (any number)."""
        cur = [rec]
        for step in fp.steps:
            nxt = []
            for r in cur:
                for link in self.links(r.get(step.link.name)):
                    if link["type"] == step.target:
                        nxt.append(self.store.tables[step.target][link["id"]])
            cur = nxt
            if not cur:
                break
        return cur

    # -- filters --------------------------------------------------------------------
    def compile(self, node: Node | Clause) -> Pred:
        if isinstance(node, Node):
            preds = [self.compile(c) for c in node.children]
            if not preds:
                return lambda r: True
            if len(preds) == 1:
                return preds[0]
            if node.operator == "and":
                def all_of(r: dict[str, Any]) -> bool:
                    for p in preds:
                        if not p(r):
                            return False
                    return True
                return all_of

            def any_of(r: dict[str, Any]) -> bool:
                for p in preds:
                    if p(r):
                        return True
                return False
            return any_of
        test = self.value_test(node)
        fp = node.path
        fname = fp.leaf.name
        default = empty_value(fp.leaf.data_type)
        if not fp.steps:
            return lambda r: test(r.get(fname, default))
        return lambda r: any(test(t.get(fname, default)) for t in self.follow(r, fp))

    def value_test(self, c: Clause) -> Test:
        dtype, rel, vals = c.path.leaf.data_type, c.relation, c.values
        neg = {"is_not": "is", "not_in": "in", "not_contains": "contains",
               "name_not_contains": "name_contains", "type_is_not": "type_is",
               "not_between": "between"}
        if rel in neg and not (rel == "not_between"):
            pos = self._positive_test(dtype, neg[rel], vals)
            return lambda x: not pos(x)
        if rel == "not_between":
            pos = self._positive_test(dtype, "between", vals)
            return lambda x: x is not None and not pos(x)
        return self._positive_test(dtype, rel, vals)

    def _positive_test(self, dtype: str, rel: str, vals: tuple[Any, ...]) -> Test:
        v = vals[0] if vals else None
        if dtype in ("entity",) or dtype in MULTI:
            return self._link_test(dtype, rel, vals)
        if dtype == "tag_list":
            if isinstance(v, dict):  # a Tag entity: match on its name
                v = v.get("name") or self.name_of(str(v.get("type") or "Tag"), v.get("id"))
            return _tag_test(rel, v)
        if dtype == "checkbox":
            return lambda x: bool(x) == v
        if dtype == "image":
            return lambda x: x is None
        if rel == "is":
            if v is None:
                return lambda x: x is None
            fv = fold(v)
            return lambda x: x is not None and fold(x) == fv
        if rel == "in":
            wanted = {fold(x) for x in vals if x is not None}
            has_null = any(x is None for x in vals)
            return lambda x: has_null if x is None else fold(x) in wanted
        if rel in ("contains", "starts_with", "ends_with"):
            s = fold(v or "")
            op = {"contains": str.__contains__, "starts_with": str.startswith,
                  "ends_with": str.endswith}[rel]
            return lambda x: op(fold(x or ""), s)
        if rel == "less_than":
            return lambda x: x is not None and x < v
        if rel == "greater_than":
            return lambda x: x is not None and x > v
        if rel == "between":
            lo, hi = vals
            return lambda x: x is not None and (lo is None or x >= lo) and (hi is None or x <= hi)
        if rel in TIME_RELATIONS:
            lo, hi = time_window(rel, vals, dtype)
            if rel.startswith("not_"):
                return lambda x: x is not None and not (lo <= x <= hi)
            return lambda x: x is not None and lo <= x <= hi
        raise errors.bad_relation("read", rel, dtype, "?")  # pragma: no cover - filters.parse guards

    def _link_test(self, dtype: str, rel: str, vals: tuple[Any, ...]) -> Test:
        v = vals[0] if vals else None
        many = dtype in MULTI

        def key(link: Any) -> tuple[Any, Any]:
            return (link.get("type"), link.get("id"))

        if rel in ("is", "in"):
            wanted = {key(x) for x in vals if isinstance(x, dict)}
            has_null = any(x is None for x in vals)
            if many:
                def t(x: Any) -> bool:
                    ls = self.links(x)
                    return (has_null and not ls) or any(key(link) in wanted for link in ls)
                return t
            return lambda x: (has_null and not self.links(x)) or (
                x is not None and key(x) in wanted and self.live(x))
        if rel == "type_is":
            if v is None:
                return lambda x: not self.links(x)
            return lambda x: any(link["type"] == v for link in self.links(x))
        if rel in ("name_contains", "name_starts_with", "name_ends_with", "name_is", "contains"):
            s = fold(v or "")
            op: Callable[[str, str], bool] = {
                "name_contains": str.__contains__, "contains": str.__contains__,
                "name_starts_with": str.startswith, "name_ends_with": str.endswith,
                "name_is": str.__eq__}[rel]

            def names(x: Any) -> Iterable[str]:
                for link in self.links(x):
                    n = self.name_of(link["type"], link["id"])
                    yield fold(n if isinstance(n, str) else ("" if n is None else str(n)))
            return lambda x: any(op(n, s) for n in names(x))
        raise errors.bad_relation("read", rel, dtype, "?")  # pragma: no cover

    # -- id selection -------------------------------------------------------------
    def select(self, entity_type: str, filters: Any, sorts: Any = None, return_only: str = "active",
               include_archived: bool = True, method: str = "read") -> "Matches":
        """Ids matching the query, in result order, evaluated lazily where order allows.

        Cached per query and per version of the types it reads, so the pages of one
        query share the work; id-only conditions (keyset paging, `id > N` polling)
        are a bisect into the store's id list.
        """
        store = self.store
        group = parse(store.schema, entity_type, filters, method)
        sort_keys = self._parse_sorts(entity_type, sorts, method)
        hide = entity_type == "EventLogEntry" and bool(store.hidden_events)
        if not group.children and not sort_keys and not hide and (
                include_archived or not store.schema.get_field(entity_type, "project")):
            # the fast path: every active (or retired) id in order, cached by the store
            return Matches.done(store.ids(entity_type, return_only == "retired"))
        cache_key = None
        deps = None if hide else self._deps(entity_type, group, sort_keys, include_archived)
        if deps is not None:
            try:
                cache_key = (entity_type, json.dumps(filters, sort_keys=True, default=str),
                             json.dumps(sorts, sort_keys=True, default=str), return_only, include_archived)
            except (TypeError, ValueError):
                cache_key = None
        if cache_key is not None:
            version = store.version if deps == "all" else tuple(store.versions.get(t, 0) for t in deps)
            hit = self._ids_cache.get(cache_key)
            if hit is not None and hit[0] == version:
                self._ids_cache.move_to_end(cache_key)
                return hit[1]
        matches = self._evaluate(entity_type, group, sort_keys, return_only, include_archived)
        if hide:  # out-of-order commits: written but not yet visible event ids
            hidden = store.visible_hidden_events()
            return Matches.done([i for i in matches.all() if i not in hidden])
        if cache_key is not None:
            self._ids_cache[cache_key] = (version, matches)
            if len(self._ids_cache) > self.CACHE_SIZE:
                self._ids_cache.popitem(last=False)
        return matches

    def _deps(self, entity_type: str, group: Node, sort_keys: list[tuple[Path, bool]],
              include_archived: bool) -> Any:
        """Types whose versions decide the result; "all" if unknown; None if uncacheable."""
        deps = {entity_type}
        if not include_archived:
            deps.add("Project")
        paths: list[Path] = [fp for fp, _ in sort_keys]

        def walk(node: Node | Clause) -> bool:
            if isinstance(node, Node):
                return all(walk(c) for c in node.children)
            if node.relation in TIME_RELATIONS:
                return False
            paths.append(node.path)
            return True
        if not walk(group):
            return None
        for fp in paths:
            deps.update(s.target for s in fp.steps)
            if fp.leaf.is_link:
                if not fp.leaf.valid_types:
                    return "all"
                deps.update(fp.leaf.valid_types)
        return tuple(sorted(deps))

    def _evaluate(self, entity_type: str, group: Node, sort_keys: list[tuple[Path, bool]],
                  return_only: str, include_archived: bool) -> "Matches":
        store = self.store
        table = store.tables.get(entity_type, {})
        ids, group = _narrow_by_id(store.ids(entity_type, retired=(return_only == "retired")), group)
        tests: list[Callable[[int], bool]] = []
        if not include_archived and entity_type != "Project" and store.schema.get_field(entity_type, "project"):
            archived = {i for i, r in store.tables.get("Project", {}).items() if r.get("archived")}
            if archived:
                def visible(i: int) -> bool:
                    p = table[i].get("project")
                    return not (isinstance(p, dict) and p.get("type") == "Project" and p.get("id") in archived)
                tests.append(visible)
        if group.children:
            pred = self.compile(group)
            tests.append(lambda i: pred(table[i]))
        if not tests and not sort_keys:
            return Matches.done(ids)
        it: Iterable[int] = ids
        for t in tests:
            it = filter(t, it)
        if not sort_keys:
            return Matches(iter(it))
        out = list(it)
        for fp, desc in reversed(sort_keys):
            keyf = self._sort_key(fp)
            out.sort(key=lambda i: keyf(table[i]), reverse=desc)
        return Matches.done(out)

    def _parse_sorts(self, entity_type: str, sorts: Any, method: str) -> list[tuple[Path, bool]]:
        if sorts is None:
            return []
        if not isinstance(sorts, list):
            raise errors.bad_sort(method, sorts)
        out = []
        for s in sorts:
            if not isinstance(s, dict):
                raise errors.bad_sort(method, s)
            fname = s.get("field_name", s.get("column"))
            direction = s.get("direction", "asc")
            if direction not in ("asc", "desc"):
                raise errors.bad_sort(method, s)
            fp = self.path(entity_type, fname, method)
            if fp.leaf.data_type in UNREADABLE or fp.leaf.data_type in ("serializable", "password"):
                raise errors.unsortable_field(method, fp.entity_type, fname, fp.leaf.data_type)
            out.append((fp, direction == "desc"))
        if len(out) == 1 and out[0][0].text == "id" and not out[0][1]:
            return []  # already the natural order
        return out

    def _sort_key(self, fp: Path) -> Callable[[dict[str, Any]], Any]:
        dtype = fp.leaf.data_type
        fname = fp.leaf.name

        def norm(x: Any) -> tuple[Any, ...]:
            if dtype == "checkbox":
                return (1, bool(x))
            if dtype == "entity" or dtype in MULTI:
                ls = self.links(x)
                if not ls:
                    return (0,)
                return (1, tuple((fold(str(self.name_of(l["type"], l["id"]) or "")), l["type"], l["id"])
                                 for l in ls))
            if dtype == "tag_list":
                return (1, tuple(sorted(fold(t) for t in x))) if x else (0,)
            if x is None:
                return (0,)
            if isinstance(x, str):
                return (1, x.casefold())
            if isinstance(x, (dict, list)):
                return (1, json.dumps(x, sort_keys=True))
            return (1, x)

        if not fp.steps:
            return lambda r: norm(r.get(fname))

        def deep(r: dict[str, Any]) -> tuple[Any, ...]:
            reached = self.follow(r, fp)
            return norm(reached[0].get(fname)) if reached else (0,)
        return deep

    # -- rendering --------------------------------------------------------------------
    def renderer(self, entity_type: str, return_fields: Any, method: str = "read",
                 shown: Callable[[Any], dict[str, Any] | None] | None = None
                 ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A function turning a stored record into its wire dict (type, id, fields); links
        rendered by `shown` (default `Engine.shown`; `answer_shown` for a whole read)."""
        if return_fields is None:
            return_fields = ["id"]
        if not isinstance(return_fields, list):
            raise errors.bad_return_field(method, return_fields)
        for name in return_fields:
            if not isinstance(name, str):
                raise errors.bad_return_field(method, name)
        # (name, stored field, its empty value, formatter): a field of the record itself,
        # formatted unless the formatter is the identity; (name, None, None, getter): a deep
        # field, read by the getter from the whole record.
        spec: list[tuple[str, str | None, Any, Callable[[Any], Any] | None]] = []
        for name in dict.fromkeys(return_fields):
            if name in ("type", "id"):
                continue
            try:
                fp = self.path(entity_type, name, method)
            except errors.Fault:
                if "." in name:  # the site answers null for deep fields it cannot follow
                    spec.append((name, None, None, lambda r: None))
                    continue
                raise
            if fp.steps:
                spec.append((name, None, None, self._getter(fp, shown)))
            else:
                fmt = self.formatter(fp.leaf.data_type, shown)
                spec.append((name, fp.leaf.name, empty_value(fp.leaf.data_type), None if fmt is _same else fmt))

        def render(rec: dict[str, Any]) -> dict[str, Any]:
            out = {"type": entity_type, "id": rec["id"]}
            get = rec.get
            for name, fname, default, fn in spec:
                if fname is None:
                    out[name] = fn(rec)  # type: ignore[misc]
                elif fn is None:
                    out[name] = get(fname, default)
                else:
                    out[name] = fn(get(fname, default))
            return out
        return render

    def _getter(self, fp: Path, shown: Callable[[Any], dict[str, Any] | None] | None = None
                ) -> Callable[[dict[str, Any]], Any]:
        fmt = self.formatter(fp.leaf.data_type, shown)
        fname = fp.leaf.name
        default = empty_value(fp.leaf.data_type)
        if not fp.steps:
            return lambda r: fmt(r.get(fname, default))
        if any(s.link.is_multi for s in fp.steps):
            return lambda r: None
        store = self.store

        def deep(r: dict[str, Any]) -> Any:
            cur: dict[str, Any] | None = r
            for step in fp.steps:
                link = cur.get(step.link.name)
                if not isinstance(link, dict) or link.get("type") != step.target:
                    return None
                cur = store.get_active(step.target, link.get("id"))
                if cur is None:
                    return None
            return fmt(cur.get(fname, default))
        return deep

    def formatter(self, dtype: str, shown: Callable[[Any], dict[str, Any] | None] | None = None
                  ) -> Callable[[Any], Any]:
        """Stored value -> wire value for one data type."""
        shown = shown or self.shown
        if dtype == "entity":
            return shown  # None for anything but a link to a live entity
        if dtype in MULTI:
            def multi(x: Any) -> list[dict[str, Any]]:
                if x is None:
                    return []
                if isinstance(x, dict):
                    x = (x,)
                return [s for s in map(shown, x) if s is not None]
            return multi
        if dtype == "password":
            return lambda x: None if x is None else "*******"
        if dtype == "image":
            return lambda x: self.absolute(x) if isinstance(x, str) else x
        if dtype == "url":
            def url(x: Any) -> Any:
                if isinstance(x, dict) and isinstance(x.get("url"), str) and x["url"].startswith("/"):
                    return {**x, "url": self.absolute(x["url"])}
                return x
            return url
        if dtype in UNREADABLE:
            return lambda x: None
        if dtype == "tag_list":
            return lambda x: list(x) if x else []
        return _same

    def absolute(self, path: str) -> str:
        return self.base_url() + path if path.startswith("/") else path

    # -- read ----------------------------------------------------------------------------
    def read(self, params: Any, method: str = "read") -> dict[str, Any]:
        """The whole `read` RPC: params in, `{"entities", "paging_info"}` out."""
        if not isinstance(params, dict):
            raise errors.crud(method, "parameters must be an object")
        etype = params.get("type")
        if not isinstance(etype, str) or etype not in self.store.schema:
            raise errors.unknown_entity_type(method, etype)
        return_only = params.get("return_only", "active") or "active"
        if return_only not in ("active", "retired"):
            raise errors.bad_return_only(method, return_only)
        include_archived = params.get("include_archived_projects", True)
        if not isinstance(include_archived, bool):
            raise errors.crud(method, "include_archived_projects must be a boolean")
        _check_presets(params.get("additional_filter_presets"), method)
        paging = params.get("paging") or {}
        if not isinstance(paging, dict):
            raise errors.crud(method, "'paging' must be an object")
        per_page = paging.get("entities_per_page", 500)
        page = paging.get("current_page", 1)
        for name, n in (("entities_per_page", per_page), ("current_page", page)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise errors.bad_paging(method, name, n)
        render = self.renderer(etype, params.get("return_fields"), method, self.answer_shown())
        matches = self.select(etype, params.get("filters"), params.get("sorts"), return_only,
                              include_archived, method)
        start = (page - 1) * per_page
        table = self.store.tables[etype]
        page_ids, has_next = matches.page(start, per_page)
        entities = [render(table[i]) for i in page_ids]
        paging_info: dict[str, Any] = {"has_next_page": has_next}
        if params.get("return_paging_info"):
            count = len(matches)
            paging_info.update(entity_count=count, page_count=-(-count // per_page),
                               current_page=page, entities_per_page=per_page)
        return {"entities": entities, "paging_info": paging_info}


def _narrow_by_id(ids: list[int], group: Node) -> tuple[list[int], Node]:
    """Cut the ascending id list to what top-level `id` conditions of an "and" allow.

    Returns the candidates and the part of the filter still to evaluate on them
    (the id conditions are fully applied by the cut).
    """
    if not (group.operator == "and" or len(group.children) == 1):
        return ids, group
    rest: list[Clause | Node] = []
    lo, hi = 0, len(ids)
    found: list[int] | None = None
    for c in group.children:
        if not isinstance(c, Clause) or c.path.steps or c.path.text != "id" or None in c.values \
                or c.relation not in ("greater_than", "less_than", "between", "is", "in"):
            rest.append(c)
            continue
        v = c.values
        if c.relation == "greater_than":
            lo = max(lo, bisect.bisect_right(ids, v[0]))
        elif c.relation == "less_than":
            hi = min(hi, bisect.bisect_left(ids, v[0]))
        elif c.relation == "between":
            lo = max(lo, bisect.bisect_left(ids, v[0]))
            hi = min(hi, bisect.bisect_right(ids, v[1]))
        else:
            wanted = set(v) if found is None else set(v) & set(found)
            found = []
            for w in sorted(wanted):
                k = bisect.bisect_left(ids, w)
                if k < len(ids) and ids[k] == w:
                    found.append(w)
    remaining = Node("and", tuple(rest))
    if found is not None:
        lo_v = ids[lo] if lo < len(ids) else None
        hi_v = ids[hi - 1] if 0 < hi <= len(ids) else None
        if lo_v is None or hi_v is None or lo >= hi:
            return [], remaining
        return [w for w in found if lo_v <= w <= hi_v], remaining
    if lo == 0 and hi == len(ids):
        return ids, remaining
    return ids[lo:max(lo, hi)], remaining


class Matches:
    """The ids of one query in result order, produced on demand and kept.

    A page needs only its ids plus one (for `has_next_page`); counting forces the rest.
    `done` lists may be the store's shared list: never mutated here.
    """

    __slots__ = ("items", "_it")

    def __init__(self, it: Iterator[int] | None, items: list[int] | None = None) -> None:
        self.items: list[int] = items if items is not None else []
        self._it = it

    @classmethod
    def done(cls, items: list[int]) -> "Matches":
        return cls(None, items)

    def upto(self, n: int) -> None:
        """Make at least n ids available, if there are that many."""
        if self._it is not None and len(self.items) < n:
            need = n - len(self.items)
            self.items.extend(itertools.islice(self._it, need))
            if len(self.items) < n:
                self._it = None

    def page(self, start: int, count: int) -> tuple[list[int], bool]:
        self.upto(start + count + 1)
        return self.items[start:start + count], len(self.items) > start + count

    def all(self) -> list[int]:
        if self._it is not None:
            self.items.extend(self._it)
            self._it = None
        return self.items

    def __len__(self) -> int:
        return len(self.all())


def _check_presets(presets: Any, method: str) -> None:
    if presets is None:
        return
    if not isinstance(presets, list) or not all(isinstance(p, dict) for p in presets):
        raise errors.crud(method, "additional_filter_presets must be a list of objects")
    for p in presets:
        name = p.get("preset_name")
        if not name:
            raise errors.crud(method, "additional_filter_presets: 'preset_name' missing")
        raise errors.crud(method, f"additional_filter_presets: preset '{name}' is not supported by this site")


def _tag_test(rel: str, v: Any) -> Test:
    if isinstance(v, dict):
        v = v.get("name")
    if rel == "is":
        if v is None:
            return lambda x: not x
        fv = fold(v)
        return lambda x: bool(x) and any(fold(t) == fv for t in x)
    s = fold(v or "")
    if rel == "name_contains":
        return lambda x: bool(x) and any(s in fold(t) for t in x)
    if rel == "name_is":
        return lambda x: bool(x) and any(fold(t) == s for t in x)
    raise errors.bad_relation("read", rel, "tag_list", "?")  # pragma: no cover


def _add_months(d: dt.datetime, months: int) -> dt.datetime:
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    last = [31, 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28, 31, 30, 31, 30,
            31, 31, 30, 31, 30, 31][m - 1]
    return d.replace(year=y, month=m, day=min(d.day, last))


def _shift(now: dt.datetime, n: int, unit: str) -> dt.datetime:
    if unit == "HOUR":
        return now + dt.timedelta(hours=n)
    if unit == "DAY":
        return now + dt.timedelta(days=n)
    if unit == "WEEK":
        return now + dt.timedelta(weeks=n)
    if unit == "MONTH":
        return _add_months(now, n)
    return _add_months(now, 12 * n)


def time_window(rel: str, vals: tuple[Any, ...], dtype: str, now: dt.datetime | None = None
                ) -> tuple[str, str]:
    """Inclusive [lo, hi] bounds, in the field's wire format, of a time relation (UTC)."""
    now = now or utcnow()
    if rel in ("in_last", "not_in_last", "in_next", "not_in_next"):
        n, unit = vals
        other = _shift(now, -n if "last" in rel else n, unit)
        lo, hi = min(now, other), max(now, other)
    else:
        k = vals[0]
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if rel == "in_calendar_day":
            lo = day + dt.timedelta(days=k)
            hi = lo + dt.timedelta(days=1)
        elif rel == "in_calendar_week":
            lo = day - dt.timedelta(days=day.weekday()) + dt.timedelta(weeks=k)
            hi = lo + dt.timedelta(weeks=1)
        elif rel == "in_calendar_month":
            lo = _add_months(day.replace(day=1), k)
            hi = _add_months(lo, 1)
        else:
            lo = day.replace(month=1, day=1)
            lo = lo.replace(year=lo.year + k)
            hi = lo.replace(year=lo.year + 1)
        hi = hi - dt.timedelta(seconds=1)
    if dtype == "date":
        return lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d")
    return lo.strftime("%Y-%m-%dT%H:%M:%SZ"), hi.strftime("%Y-%m-%dT%H:%M:%SZ")
