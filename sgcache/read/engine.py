"""The read engine: answer an api3 `read` from the store exactly, or refuse.

A request is translated into one SQL query for the page of entities (filters as
WHERE/EXISTS, deep return fields and sorts as LEFT JOINs keyed by their *full path*,
so `created_by.HumanUser.x` and `updated_by.HumanUser.x` never share a join), plus one
query per multi-entity return field for the page's ids. Anything the engine cannot
answer exactly raises `Passthrough(reason)` and the server forwards the request.

What one request may make it build is bounded (MAX_HOPS, MAX_FIELDS, MAX_CONDITIONS ...:
beyond them the request is passed through, unplanned), and so is everything it keeps
between requests (plans, aliases, compiled statements: `_LRU`, bounded in columns).

Why one module of ~900 lines: planning (paths, joins, sorts), paging and rendering share
the plan's private types (`_Plan`, `_Query`, `_LinkCols`); split apart, each piece would
export them. The relations (`relations.py`) and summaries (`summarize.py`) live outside.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..store.field_types import (
    WITHHELD,
    BoolField,
    EntityField,
    FieldType,
    MultiEntityField,
    StringField,
    TextField,
)
from ..store.tables import ACTIVE, Store, active_is
from .filters import Condition, FieldPath, Group, parse_filters, resolve_path
from .names import name_field
from .passthrough import Passthrough
from .relations import SORTABLE, Ctx, builder_for, check_values

#: Read params the engine understands; any other key makes it pass the read through.
KNOWN_PARAMS = frozenset({
    "type", "return_fields", "filters", "return_only", "paging", "sorts",
    "api_return_image_urls", "return_paging_info_without_counts", "return_paging_info",
    "include_archived_projects",
})
MAX_PAGE = 5000
#: Read plans kept per engine (one per type + return fields + sorts asked for).
MAX_PLANS = 2000

# Bounds on what one request may make the planner build. Beyond them the request is passed
# through (not refused: the site decides): without them a valid caller could make a plan,
# and the caches below, as large as it liked (a 10,000-hop return field kept 1.6 GB).
#: Links one path may follow (`entity.Shot.sg_sequence.Sequence.code` follows 2).
MAX_HOPS = 6
#: Return fields, summaries plus groupings, and sorts per request.
MAX_FIELDS = 1000
MAX_SORTS = 32
#: Conditions and groups in one filter tree (SQLite parses 999 ORed conditions no more: its
#: expression depth is 1,000); values of all its conditions.
MAX_CONDITIONS = 500
MAX_VALUES = 30_000  # SQLite binds at most 32,766 parameters per statement
#: Table aliases in one statement (SQLite joins at most 64 tables in one FROM).
MAX_ALIASES = 128
SQLITE_MAX_JOIN = 64
# The caches are bounded in columns: an alias copies every column of its table, and a plan
# or a compiled statement holds the aliases it joins (~2.5 KB a column all told); the least
# recently used go first. At most ~250 MB between them, whatever callers ask.
ALIAS_CACHE_COLUMNS = 20_000
PLAN_CACHE_COLUMNS = 40_000
STATEMENT_CACHE_COLUMNS = 40_000
STATEMENT_CACHE_ITEMS = 500  # SQLAlchemy's own default

K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A thread-safe mapping bounded in entries and in total weight, least recently used
    evicted first. Every cache the engine keys by what requests ask for is one of these:
    an unbounded dict keyed by callers' input is memory a caller can take and keep."""

    def __init__(self, max_items: int, max_weight: int) -> None:
        self.max_items = max_items
        self.max_weight = max_weight
        self.weight = 0
        self._d: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                return None
            self._d.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        """Keep `value` (a value heavier than the whole budget is not kept)."""
        if weight > self.max_weight:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            self._d[key] = (value, weight)
            self.weight += weight
            while len(self._d) > self.max_items or self.weight > self.max_weight:
                _k, (_v, w) = self._d.popitem(last=False)
                self.weight -= w


class _StatementCache(_LRU[Any, Any]):
    """SQLAlchemy's compiled-statement cache for the engine's reads (`compiled_cache`), bounded
    like the others: the Engine's own keeps 500 statements of any size, each holding every
    alias it joins. A statement weighs the alias columns of the one being executed."""

    def __init__(self, local: threading.local) -> None:
        super().__init__(STATEMENT_CACHE_ITEMS, STATEMENT_CACHE_COLUMNS)
        self._local = local

    def __setitem__(self, key: Any, compiled: Any) -> None:
        self.put(key, compiled, getattr(self._local, "columns", 0) + 1)


def _too_long(path: Any) -> bool:
    return isinstance(path, str) and path.count(".") > 2 * MAX_HOPS


def _check_filter_size(filters: Any) -> None:
    """Passthrough for a filter tree beyond MAX_CONDITIONS / MAX_VALUES / MAX_HOPS, read
    before parsing it (iteratively: the parser itself faults on too deep a tree)."""
    groups, nodes, values = [filters], 0, 0
    while groups:
        g = groups.pop()
        conds = g if isinstance(g, list) else g.get("conditions") if isinstance(g, dict) else None
        if not isinstance(conds, list):
            continue  # malformed: the parser faults, the site decides
        nodes += 1 + len(conds)
        for c in conds:
            if isinstance(c, dict) and "conditions" in c:
                groups.append(c)
                continue
            if isinstance(c, dict):
                path, vals = c.get("path"), c.get("values")
            elif isinstance(c, list) and c:
                path, vals = c[0], c[2:]
                if len(vals) == 1 and isinstance(vals[0], list):
                    vals = vals[0]
            else:
                continue
            if _too_long(path):
                raise Passthrough(f"filter path through more than {MAX_HOPS} links: the site decides")
            values += len(vals) if isinstance(vals, list) else 1
        if nodes > MAX_CONDITIONS or values > MAX_VALUES:
            raise Passthrough(f"filters over {MAX_CONDITIONS} conditions or {MAX_VALUES} values: "
                              "the site decides")


def _check_paths(what: str, paths: list[Any], limit: int) -> None:
    """Passthrough for more than `limit` paths, or a path through more than MAX_HOPS links."""
    if len(paths) > limit:
        raise Passthrough(f"more than {limit} {what}: the site decides")
    if any(_too_long(p) for p in paths):
        raise Passthrough(f"{what} through more than {MAX_HOPS} links: the site decides")

@dataclass
class _LinkCols:
    """Columns selected to render one entity-valued return field."""

    type_col: str
    id_col: str
    names: dict[str, tuple[str, str]]  # target type -> (name label, active label)


@dataclass
class _Plan:
    """The part of a read's SELECT that does not depend on filter values (see `_plan`)."""

    root: Any
    from_clause: Any
    columns: list[Any]
    renderers: list[tuple[str, Callable[..., Any]]]
    order: list[Any]
    id_label: str
    n_aliases: int  # aliases t0..tn are the plan's; filters number theirs after
    multi: bool  # has multi-entity return fields (a second query per page)
    by_id: dict[tuple[str, bool], Any] = field(default_factory=dict)
    weight: int = 0  # columns of its aliases and labels (its size in the plan cache)


def _plan_key(etype: str, fields: Any, sorts: Any) -> Any:
    """The plan cache key of a read, or None if its parts are not hashable."""
    try:
        key = (etype, tuple(fields) if isinstance(fields, list) else fields,
               tuple(tuple(sorted(s.items())) if isinstance(s, dict) else s for s in sorts)
               if isinstance(sorts, list) else sorts)
        hash(key)
    except TypeError:  # an unhashable value somewhere: plan it, don't keep it
        return None
    return key


def _id_is(filters: Any) -> int | None:
    """N if wire filters are exactly `id is N` (one integer), else None; no parsing."""
    conds = (filters.get("conditions") if isinstance(filters, dict) and filters.get("logical_operator", "and") == "and"
             else filters)
    if not isinstance(conds, list) or len(conds) != 1:
        return None
    c = conds[0]
    if not (isinstance(c, dict) and c.get("path") == "id" and c.get("relation") == "is") or "conditions" in c:
        return None  # (a dict with conditions is a group, whatever else it holds)
    values = c.get("values")
    if isinstance(values, list) and len(values) == 1 and type(values[0]) is int:
        return values[0]
    return None


@dataclass
class _Request:
    """A validated read: its type, filters (parsed unless exactly `id is N`: then `pk`), plan
    and paging. Other spellings of one id (a bare value, a legacy list) take the general path."""

    etype: str
    filters: Any
    group: Group | None
    pk: int | None
    plan: _Plan
    per_page: int
    page: int
    return_only: str
    include_archived: bool
    want_count: bool


class _Point:
    """A by-id SELECT compiled once and run on the driver's own cursor.

    For a one-row answer SQLAlchemy's per-execution machinery costs more than the
    database does; the SQL, the bound values and the result conversions are
    SQLAlchemy's own, worked out once here. PostgreSQL's result conversions depend on
    the column types the server reports, so they are settled on the first run.
    """

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.dialect = dialect
        self.sql = compiled.string
        fixed = compiled.construct_params({"pk": 0})
        values: dict[str, Any] = {}
        for name, value in fixed.items():
            proc = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            values[name] = proc(value) if proc is not None and name != "pk" else value
        self.pk_proc = compiled.binds["pk"].type.dialect_impl(dialect).bind_processor(dialect)
        self.positional = [*compiled.positiontup] if compiled.positional else None
        if self.positional is not None and self.positional.count("pk") != 1:  # pragma: no cover
            raise RuntimeError("a by-id statement binds pk exactly once")
        self.values = values
        self.columns = list(stmt.selected_columns)
        self.keys = [c.name for c in self.columns]
        self.procs: list[tuple[int, Any]] | None = None

    def params(self, pk: int) -> Any:
        pk_value = self.pk_proc(pk) if self.pk_proc is not None else pk
        if self.positional is None:
            return {**self.values, "pk": pk_value}
        return [pk_value if n == "pk" else self.values[n] for n in self.positional]

    def rows(self, raw: list[Any], cur: Any) -> list[dict[str, Any]]:
        procs = self.procs
        if procs is None:  # the cursor's description is built anew on each access: once
            procs = self.procs = [
                (i, p) for i, (c, d) in enumerate(zip(self.columns, cur.description))
                if (p := c.type.dialect_impl(self.dialect).result_processor(self.dialect, d[1])) is not None]
        out = []
        for row in raw:
            vals = list(row)
            for i, proc in procs:
                vals[i] = proc(vals[i])
            out.append(dict(zip(self.keys, vals)))
        return out

    def run(self, conn: Connection, pk: int) -> list[dict[str, Any]]:
        """On a SQLAlchemy connection (its driver connection, in its transaction)."""
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(self.sql, self.params(pk))
            return self.rows(cur.fetchall(), cur)
        finally:
            cur.close()

    async def run_async(self, aconn: Any, pk: int) -> list[dict[str, Any]]:
        """On a psycopg AsyncConnection."""
        async with aconn.cursor() as cur:
            await cur.execute(self.sql, self.params(pk))
            return self.rows(await cur.fetchall(), cur)


@dataclass
class _Query:
    """Mutable state while building one read's SELECT."""

    engine: "ReadEngine"
    root_type: str
    root: Any
    from_clause: Any
    joins: dict[str, Any] = field(default_factory=dict)  # full path prefix -> alias
    columns: list[Any] = field(default_factory=list)
    n: int = 0
    multi: bool = False  # a multi-entity field is loaded by a second query

    def label(self, col: Any) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.columns.append(col.label(name))
        return name


class ReadEngine:
    """Answers `read` requests from a Store, or raises Passthrough."""

    def __init__(self, store: Store, *, is_ready: Callable[[str, str], bool] | None = None) -> None:
        self.store = store
        self.schema = store.schema
        self._is_ready = is_ready or (lambda t, f: True)
        # Aliases are reused across requests: building one copies every column of the
        # table, which costs more than running a typical query. Numbered per statement
        # (at most MAX_ALIASES), so keys are few; both caches are bounded (see _LRU).
        self._aliases: _LRU[tuple[str, int], Any] = _LRU(MAX_ALIASES * 8, ALIAS_CACHE_COLUMNS)
        self._local = threading.local()
        self._plans: _LRU[Any, _Plan] = _LRU(MAX_PLANS, PLAN_CACHE_COLUMNS)
        self._statements = _StatementCache(self._local)

    def bounded(self, conn: Connection) -> Connection:
        """`conn`, compiling this engine's statements through its bounded cache (in place)."""
        return conn.execution_options(compiled_cache=self._statements)

    def alias(self, etype: str, fresh: bool = False) -> Any:
        """The next alias of `etype`'s table for the statement being built (fresh=True: a
        new request starts, numbering from 0); Passthrough beyond MAX_ALIASES."""
        n = 0 if fresh else getattr(self._local, "n", 0) + 1
        if n >= MAX_ALIASES:
            raise Passthrough(f"more than {MAX_ALIASES} joins in one statement: the site decides")
        self._local.n = n
        a = self._aliases.get((etype, n))
        if a is None:
            table = self.store[etype].table
            a = table.alias(f"t{n}")
            a.c  # build the column proxies before another thread can see the alias
            self._aliases.put((etype, n), a, len(table.columns))
        # columns held by the statement's aliases: the weight of a plan in the plan cache
        self._local.columns = (0 if fresh else getattr(self._local, "columns", 0)) + len(a.c)
        return a

    # -- entry point -------------------------------------------------------------
    def cached_type(self, params: Any, known: frozenset[str], method: str) -> str:
        """The request's entity type, if the params are ones we understand and it is cached."""
        if not isinstance(params, dict):
            raise Passthrough("params not a dict")
        extra = set(params) - known
        if extra:
            raise Passthrough(f"unsupported {method} params: {', '.join(sorted(map(str, extra)))}")
        etype = params.get("type")
        if not isinstance(etype, str) or etype not in self.store:
            raise Passthrough(f"uncached entity type {etype!r}")
        if params.get("filters"):
            _check_filter_size(params["filters"])
        specs = [s for k in ("summaries", "grouping") if isinstance(params.get(k), list) for s in params[k]]
        if specs:
            _check_paths("summaries and groupings", [s.get("field") if isinstance(s, dict) else None
                                                     for s in specs], MAX_FIELDS)
        return etype

    def _request(self, params: Any) -> "_Request":
        """Validate a read's params and find (or build) its plan; Passthrough if not ours."""
        etype = self.cached_type(params, KNOWN_PARAMS, "read")
        filters = params.get("filters")
        pk = _id_is(filters)  # `id is N` needs no parsing: it is valid on every type
        try:
            group = parse_filters(self.schema, etype, filters) if pk is None else None
            plan = self._plan(etype, params.get("return_fields"), params.get("sorts"))
        except errors.Fault as e:  # the site's own message is authoritative
            raise Passthrough(f"invalid request, site decides: {e.message}") from None
        per_page, page = self._paging(params.get("paging"))
        return_only = params.get("return_only", "active")
        if return_only not in ("active", "retired"):
            raise Passthrough(f"unsupported return_only {return_only!r}")
        include_archived = params.get("include_archived_projects", True)
        if not isinstance(include_archived, bool):
            raise Passthrough("include_archived_projects is not a boolean: the site decides")
        return _Request(etype, filters, group, pk, plan, per_page, page, return_only, include_archived,
                        bool(params.get("return_paging_info")))

    def point(self, params: Any, dialect: Any) -> "tuple[_Point, int, _Request]":
        """A point read's compiled statement and id (see is_point_read), validated as `read`
        would; run it with `_Point.run`/`run_async`, then `render_point` the rows."""
        req = self._request(params)
        if req.pk is None or req.page != 1 or req.want_count:  # pragma: no cover - is_point_read said so
            raise Passthrough("not a point read")
        return self._point(req, dialect), req.pk, req

    def render_point(self, req: "_Request", rows: list[dict[str, Any]]) -> dict[str, Any]:
        if req.plan.multi:  # pragma: no cover - is_point_read refuses these
            raise Passthrough("multi-entity fields need a connection")
        return {"entities": self._render(None, req.plan, req.etype, rows), "paging_info": {"has_next_page": False}}

    def _point(self, req: "_Request", dialect: Any) -> "_Point":
        key = (req.return_only, req.include_archived)
        point = req.plan.by_id.get(key)
        if point is None:
            stmt = self._by_id_stmt(req.plan, req.etype, req.return_only, req.include_archived)
            point = req.plan.by_id[key] = _Point(stmt, dialect)
        return point

    def read(self, conn: Connection, params: Any) -> dict[str, Any]:
        req = self._request(params)
        etype, plan, group, per_page, page = req.etype, req.plan, req.group, req.per_page, req.page
        return_only, include_archived, want_count = req.return_only, req.include_archived, req.want_count
        if req.pk is not None and page == 1 and not want_count:  # the commonest call of all
            rows = self._point(req, conn.dialect).run(conn, req.pk)
            return {"entities": self._render(conn, plan, etype, rows), "paging_info": {"has_next_page": False}}

        if group is None:
            group = parse_filters(self.schema, etype, req.filters)
        root = plan.root
        self._local.n = plan.n_aliases  # filter aliases never collide with the plan's joins
        self._local.columns = plan.weight
        conn = self.bounded(conn)
        where: list[ColumnElement[bool]] = [active_is(root, return_only == "active")]
        where.append(self._group(group, root, etype))
        if include_archived is False:
            where.append(self._not_archived(root, etype))
        stmt = select(*plan.columns).select_from(plan.from_clause).where(*where).order_by(*plan.order)
        stmt = stmt.limit(per_page + 1).offset((page - 1) * per_page)
        rows = conn.execute(stmt).mappings().all()
        has_next = len(rows) > per_page
        entities = self._render(conn, plan, etype, rows[:per_page])

        # The site always reports has_next_page; the counts only when asked (old protocol).
        paging_info: dict[str, Any] = {"has_next_page": has_next}
        if want_count:
            count_stmt = select(func.count()).select_from(root).where(*where)
            total = conn.execute(count_stmt).scalar_one()
            paging_info.update(entity_count=total, current_page=page, entities_per_page=per_page,
                               page_count=-(-total // per_page))
        return {"entities": entities, "paging_info": paging_info}

    def _plan(self, etype: str, fields: Any, sorts: Any) -> "_Plan":
        """What to select, join and sort for these return fields and sorts, built once.

        Planning (resolving paths, choosing columns and joins) costs more than running a
        small query, and a pipeline asks the same shapes over and over: plans are kept
        per (type, return fields, sorts), the values of the filters being left out.
        """
        key = _plan_key(etype, fields, sorts)
        plan = self._plans.get(key) if key is not None else None
        if plan is not None:
            return plan
        return_fields = self._return_fields(etype, fields)
        sort_paths = self._sorts(etype, sorts)
        root = self.alias(etype, fresh=True)
        q = _Query(self, etype, root, root)
        renderers = [(name, self._plan_field(q, path)) for name, path in return_fields]
        order = []
        for path, direction in sort_paths:
            for col in self._sort_cols(q, path):
                order.append(col.asc().nulls_first() if direction == "asc" else col.desc().nulls_last())
        order.append(root.c.id.asc())
        id_label = q.label(root.c.id)
        if self.store.dialect == "sqlite" and self._local.n >= SQLITE_MAX_JOIN:
            raise Passthrough(f"more than {SQLITE_MAX_JOIN} tables in one join on SQLite: the site decides")
        plan = _Plan(root, q.from_clause, q.columns, renderers, order, id_label, self._local.n, q.multi)
        plan.weight = self._local.columns + len(q.columns)
        if key is not None:
            self._plans.put(key, plan, plan.weight)
        return plan

    def is_point_read(self, params: Any) -> bool:
        """Whether `read(params)` is a one-row primary-key lookup over an already-built plan
        with no multi-entity fields: bounded work, cheap enough to run on the event loop.
        Only the shape is checked here; `read` validates everything as usual."""
        if not isinstance(params, dict) or params.get("return_paging_info"):
            return False
        etype = params.get("type")
        paging = params.get("paging") or {}
        if not isinstance(etype, str) or not isinstance(paging, dict) or paging.get("current_page", 1) != 1:
            return False
        if _id_is(params.get("filters")) is None:
            return False
        key = _plan_key(etype, params.get("return_fields"), params.get("sorts"))
        plan = self._plans.get(key) if key is not None else None
        if plan is None or plan.multi:
            return False
        include_archived = params.get("include_archived_projects", True)
        return (params.get("return_only", "active"), include_archived) in plan.by_id

    def _by_id_stmt(self, plan: "_Plan", etype: str, return_only: str, include_archived: bool) -> Any:
        """The plan's SELECT for one id, as a reusable statement with a bound `pk`: no
        sort or limit needed for at most one row, and SQLAlchemy compiles it only once."""
        root = plan.root
        self._local.n = plan.n_aliases
        where = [active_is(root, return_only == "active"), root.c.id == bindparam("pk")]
        if include_archived is False:
            where.append(self._not_archived(root, etype))
        return select(*plan.columns).select_from(plan.from_clause).where(*where)

    def _render(self, conn: Connection | None, plan: "_Plan", etype: str, rows: Any) -> list[dict[str, Any]]:
        """Rows of the plan's SELECT -> the site's entity dicts (multi-entity fields loaded after)."""
        entities = []
        multi_jobs: list[tuple[dict[str, Any], str, Callable[..., Any]]] = []
        id_label = plan.id_label
        for row in rows:
            ent: dict[str, Any] = {"type": etype, "id": row[id_label]}
            for name, render in plan.renderers:
                ent[name] = render(row, ent, name, multi_jobs)
            entities.append(ent)
        if multi_jobs:
            assert conn is not None, "plans with multi-entity fields are rendered with a connection"
            self._fill_multi(conn, multi_jobs)
        return entities

    # -- request parts ------------------------------------------------------------
    def _return_fields(self, etype: str, fields: Any) -> list[tuple[str, FieldPath]]:
        if fields is None:
            fields = ["id"]
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise Passthrough("return_fields not a list of strings")
        _check_paths("return fields", fields, MAX_FIELDS)
        out = []
        for f in dict.fromkeys(fields):
            if f in ("type", "id"):
                continue
            out.append((f, resolve_path(self.schema, etype, f)))
        return out

    def _sorts(self, etype: str, sorts: Any) -> list[tuple[FieldPath, str]]:
        if not sorts:
            return []
        if not isinstance(sorts, list):
            raise Passthrough("sorts not a list")
        _check_paths("sorts", [s.get("field_name", s.get("column")) if isinstance(s, dict) else None
                               for s in sorts], MAX_SORTS)
        out = []
        for s in sorts:
            if not isinstance(s, dict):
                raise Passthrough("sort not a dict")
            name = s.get("field_name", s.get("column"))
            direction = s.get("direction", "asc")
            if direction not in ("asc", "desc"):
                raise Passthrough(f"unsupported sort direction {direction!r}")
            out.append((resolve_path(self.schema, etype, name), direction))
        return out

    def _paging(self, paging: Any) -> tuple[int, int]:
        if not paging:  # the site's default page: 500 entities
            return 500, 1
        if not isinstance(paging, dict):
            raise Passthrough("paging not a dict")
        per, page = paging.get("entities_per_page", 500), paging.get("current_page", 1)
        for v in (per, page):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise Passthrough(f"unsupported paging {paging!r}")
        if per > MAX_PAGE:
            raise Passthrough(f"page size {per} above {MAX_PAGE}")
        return per, page

    # -- field access --------------------------------------------------------------
    def _ft(self, etype: str, fname: str, what: str) -> FieldType | None:
        """The storage class of a cached, ready field (None for `id`), or Passthrough."""
        if etype not in self.store:
            raise Passthrough(f"uncached entity type {etype} in {what}")
        if fname == "id":
            return None
        ft = self.store[etype].fields.get(fname)
        if ft is None:
            raise Passthrough(f"uncached field {etype}.{fname} in {what}")
        if not self._is_ready(etype, fname):
            raise Passthrough(f"field {etype}.{fname} is still being backfilled")
        return ft

    def _targets(self, ft: FieldType) -> list[str]:
        """Valid target types of a link field; all must be cached to answer exactly."""
        targets = list(ft.fs.valid_types)
        if not targets:
            raise Passthrough(f"link field {ft.fs.entity_type}.{ft.name} has no fixed target types")
        for t in targets:
            if t not in self.store:
                raise Passthrough(f"link target type {t} of {ft.fs.entity_type}.{ft.name} is not cached")
        return targets

    def _name_col(self, etype: str) -> str | None:
        nf = name_field(self.schema.entities.get(etype), etype)
        if nf is None or nf not in self.store[etype].fields:
            if nf is not None:
                raise Passthrough(f"name field {etype}.{nf} is not cached")
            return None
        return nf

    # -- filters ---------------------------------------------------------------------
    def _group(self, group: Group, table: Any, etype: str) -> ColumnElement[bool]:
        parts = [self._group(c, table, etype) if isinstance(c, Group) else self._cond(c, table)
                 for c in group.conditions]
        if not parts:
            return true()
        return and_(*parts) if group.op == "and" else or_(*parts)

    def _cond(self, cond: Condition, root: Any) -> ColumnElement[bool]:
        path = cond.path
        if cond.relation.startswith(("in_last", "not_in_last", "in_next", "not_in_next", "in_calendar")):
            raise Passthrough(f"time-relative relation {cond.relation} is answered by the site")
        leaf_type = path.hops[-1].to_type if path.hops else path.root_type
        ft = self._ft(leaf_type, path.field.name, "filter")
        if ft is None:  # id
            from ..schema import FieldSchema
            from ..store.field_types import IntField
            ft = IntField(FieldSchema(leaf_type, "id", "number"))
        build = builder_for(ft, cond.relation)
        if build is None:
            raise Passthrough(f"relation {cond.relation} on {path.field.data_type} is not answered locally")
        check_values(cond.values)
        if isinstance(ft, (EntityField, MultiEntityField)):
            self._targets(ft)

        def leaf(table: Any) -> ColumnElement[bool]:
            return build(Ctx(ft, table, self), cond.values)

        return self._through(root, path, 0, leaf)

    def _through(self, outer: Any, path: FieldPath, i: int,
                 leaf: Callable[[Any], ColumnElement[bool]]) -> ColumnElement[bool]:
        """Follow hop i of a deep filter path with EXISTS (any-match through multi links)."""
        if i == len(path.hops):
            return leaf(outer)
        hop = path.hops[i]
        ft = self._ft(hop.from_type, hop.field.name, "deep filter")
        if hop.to_type not in self.store:
            raise Passthrough(f"uncached entity type {hop.to_type} in deep filter")
        target = self.alias(hop.to_type)
        inner = self._through(target, path, i + 1, leaf)
        if isinstance(ft, EntityField):
            # An uncorrelated IN lets SQLite (and PostgreSQL) start from the few matching
            # targets and use the link index, instead of probing every outer row.
            return and_(outer.c[ft.name + "__type"] == hop.to_type, outer.c[ft.name + "__id"].in_(
                select(target.c.id).where(target.c[ACTIVE], inner)))
        if isinstance(ft, MultiEntityField):
            a = self.store[hop.from_type].assoc[ft.name].alias()
            sub = select(literal(1)).select_from(a.join(target, a.c.child_id == target.c.id)).where(
                a.c.parent_id == outer.c.id, a.c.child_type == hop.to_type, target.c[ACTIVE], inner)
        else:  # pragma: no cover - resolve_path only allows link hops
            raise Passthrough("deep path through a non-link field")
        return exists(sub)

    def link_exists(self, table: Any, ft: FieldType,
                    pred: Callable[[Any, str], ColumnElement[bool] | None] | None = None,
                    only: dict[str, list[int]] | None = None) -> ColumnElement[bool]:
        """EXISTS a *live* (cached, active) entity linked by `ft` from `table`'s row.

        `pred(child, type)` narrows it to children matching a condition (None: no child of
        that type can match); `only` to the given ids per type. Links to missing or
        retired entities never count, as on the site.
        """
        per_type = []
        for t in self._targets(ft):
            if only is not None and t not in only:
                continue
            child = self.alias(t)
            extra = pred(child, t) if pred is not None else true()
            if extra is None:
                continue
            per_type.append((t, child, extra))
        if not per_type:
            return false()
        if isinstance(ft, EntityField):
            tcol, icol = table.c[ft.name + "__type"], table.c[ft.name + "__id"]
            parts = []
            for t, child, extra in per_type:
                conds = [tcol == t]
                if only is not None:
                    conds.append(icol.in_(only[t]))
                conds.append(exists(select(literal(1)).select_from(child).where(
                    child.c.id == icol, child.c[ACTIVE], extra)))
                parts.append(and_(*conds))
            return or_(*parts)
        a = self.store[ft.fs.entity_type].assoc[ft.name].alias()
        parts = []
        for t, child, extra in per_type:
            conds = [a.c.child_type == t]
            if only is not None:
                conds.append(a.c.child_id.in_(only[t]))
            conds.append(exists(select(literal(1)).select_from(child).where(
                child.c.id == a.c.child_id, child.c[ACTIVE], extra)))
            parts.append(and_(*conds))
        return exists(select(literal(1)).select_from(a).where(a.c.parent_id == table.c.id, or_(*parts)))

    def name_ci(self, etype: str, table: Any) -> Any:
        """The folded display-name column of `etype` in `table`; None if the type has none."""
        nf = self._name_col(etype)
        if nf is None:
            return None
        if not isinstance(self.store[etype].fields[nf], TextField):
            raise Passthrough(f"name field {etype}.{nf} is not text")
        return table.c[nf + "__ci"]

    def _not_archived(self, root: Any, etype: str) -> ColumnElement[bool]:
        et = self.store[etype]
        if etype == "Project":  # whether the site hides archived projects themselves is unclear
            raise Passthrough("include_archived_projects on Project: the site decides")
        pf = et.fields.get("project")
        if pf is None:
            if "project" in self.schema[etype].fields:
                raise Passthrough(f"{etype}.project is not cached")
            return true()
        if not isinstance(pf, EntityField):
            raise Passthrough(f"{etype}.project is not a single link")
        if "Project" not in self.store or "archived" not in self.store["Project"].fields:
            raise Passthrough("Project.archived is not cached")
        p = self.alias("Project")
        return not_(exists(select(literal(1)).select_from(p).where(
            root.c.project__type == "Project", root.c.project__id == p.c.id, p.c.archived == true())))

    # -- joins for return fields and sorts ---------------------------------------------
    def _join_path(self, q: _Query, path: FieldPath) -> Any:
        """LEFT JOIN along a deep path's single-entity hops; returns the leaf's alias."""
        cur = q.root
        prefix = ""
        for hop in path.hops:
            ft = self._ft(hop.from_type, hop.field.name, "deep field")
            if not isinstance(ft, EntityField):
                raise Passthrough(f"deep field through multi-entity {hop.from_type}.{hop.field.name}")
            if hop.to_type not in self.store:
                raise Passthrough(f"uncached entity type {hop.to_type} in deep field")
            prefix = f"{prefix}{hop.field.name}.{hop.to_type}."
            alias = q.joins.get(prefix)
            if alias is None:
                alias = self.alias(hop.to_type)
                q.from_clause = q.from_clause.outerjoin(alias, and_(
                    cur.c[ft.name + "__type"] == hop.to_type, cur.c[ft.name + "__id"] == alias.c.id,
                    alias.c[ACTIVE]))
                q.joins[prefix] = alias
            cur = alias
        return cur

    def _sort_cols(self, q: _Query, path: FieldPath) -> list[Any]:
        """ORDER BY keys (ascending) of one sort, placing nulls as the site does."""
        leaf_type = path.hops[-1].to_type if path.hops else path.root_type
        ft = self._ft(leaf_type, path.field.name, "sort")
        table = self._join_path(q, path)
        if ft is None:
            return [table.c.id]
        if isinstance(ft, (TextField, StringField)):
            return [table.c[ft.name + "__ci"]]
        if isinstance(ft, BoolField):  # a null checkbox is False, and sorts with False ...
            value = func.coalesce(table.c[ft.name], false())
            if path.hops:  # ... but through a link that reaches no record the value is null
                value = case((table.c.id.is_not(None), value), else_=None)
            return [value]
        if isinstance(ft, EntityField):
            return self._link_sort_cols(q, table, ft)
        if isinstance(ft, SORTABLE):
            return [table.c[ft.name]]
        raise Passthrough(f"sorting on {ft.fs.data_type} field {path.text}")

    def _link_sort_cols(self, q: _Query, table: Any, ft: EntityField) -> list[Any]:
        """A link sorts by (linked display name folded, type, id); dead links as null."""
        tcol, icol = table.c[ft.name + "__type"], table.c[ft.name + "__id"]
        alive, names = [], []
        for t in self._targets(ft):
            tgt = self.alias(t)
            q.from_clause = q.from_clause.outerjoin(tgt, and_(tcol == t, icol == tgt.c.id, tgt.c[ACTIVE]))
            alive.append(tgt.c.id.is_not(None))
            n = self.name_ci(t, tgt)
            if n is not None:
                names.append(n)
        live = or_(*alive)
        name = func.coalesce(*names, "") if names else literal("")
        if self.store.dialect == "postgresql":  # code point order, as the site compares names
            tcol = tcol.collate("C")
        return [case((live, 1), else_=0), case((live, name), else_=None),
                case((live, tcol), else_=None), case((live, icol), else_=None)]

    def _plan_field(self, q: _Query, path: FieldPath) -> Callable[..., Any]:
        """Select what one return field needs; return a function rendering its value."""
        if any(h.field.is_multi for h in path.hops):  # the site answers null through multi links
            return lambda row, ent, name, jobs: None
        leaf_type = path.hops[-1].to_type if path.hops else path.root_type
        ft = self._ft(leaf_type, path.field.name, "return field")
        table = self._join_path(q, path)
        present = q.label(table.c.id) if path.hops else None
        if ft is None:
            lid = q.label(table.c.id)
            return lambda row, ent, name, jobs: row[lid]
        if isinstance(ft, MultiEntityField):
            self._targets(ft)
            q.multi = True
            pid = present or q.label(table.c.id)

            def render_multi(row: Any, ent: dict[str, Any], name: str, jobs: list[Any]) -> Any:
                if row[pid] is None:
                    return None
                jobs.append((ent, name, (ft, row[pid])))
                return []
            return render_multi
        if isinstance(ft, EntityField):
            return self._plan_link(q, table, ft, present)
        labels = {c: q.label(table.c[c]) for c in ft.value_columns}
        if type(ft).from_db is FieldType.from_db:  # stored as sent: the column is the value
            label = labels[ft.name]

            def render_plain(row: Any, ent: dict[str, Any], name: str, jobs: list[Any]) -> Any:
                if present is not None and row[present] is None:
                    return None
                return row[label]
            return render_plain

        def render(row: Any, ent: dict[str, Any], name: str, jobs: list[Any]) -> Any:
            if present is not None and row[present] is None:
                return None
            value = ft.from_db({c: row[lbl] for c, lbl in labels.items()})
            if value is WITHHELD:  # e.g. the meta of a script key's change: the site answers
                raise Passthrough(f"{ft.fs.entity_type}.{ft.name} withheld from the cache")
            return value
        return render

    def _plan_link(self, q: _Query, table: Any, ft: EntityField, present: str | None) -> Callable[..., Any]:
        tcol = q.label(table.c[ft.name + "__type"])
        icol = q.label(table.c[ft.name + "__id"])
        names: dict[str, tuple[str | None, str]] = {}
        for t in self._targets(ft):
            nf = self._name_col(t)
            tgt = self.alias(t)
            q.from_clause = q.from_clause.outerjoin(tgt, and_(
                table.c[ft.name + "__type"] == t, table.c[ft.name + "__id"] == tgt.c.id))
            names[t] = (q.label(tgt.c[nf]) if nf else None, q.label(tgt.c[ACTIVE]))

        def render(row: Any, ent: dict[str, Any], name: str, jobs: list[Any]) -> Any:
            t, i = row[tcol], row[icol]
            if t is None or i is None or (present is not None and row[present] is None):
                return None
            if t not in names:
                raise Passthrough(f"link to uncached type {t}")
            nlabel, alabel = names[t]
            active = row[alabel]
            if active is None:
                raise Passthrough(f"link target {t} {i} is not in the cache")
            if not active:
                return None  # the site hides links to retired entities
            return {"type": t, "id": i, "name": row[nlabel] if nlabel else None}
        return render

    def _fill_multi(self, conn: Connection, jobs: list[tuple[dict[str, Any], str, Any]]) -> None:
        """Load multi-entity values for the page: one query per field, in the site's order."""
        by_field: dict[tuple[str, str], list[tuple[dict[str, Any], str, int]]] = {}
        fts: dict[tuple[str, str], FieldType] = {}
        for ent, name, (ft, pid) in jobs:
            key = (ft.fs.entity_type, ft.name)
            by_field.setdefault(key, []).append((ent, name, pid))
            fts[key] = ft
        for key, items in by_field.items():
            ft = fts[key]
            a = self.store[key[0]].assoc[key[1]]
            cols = [a.c.parent_id, a.c.child_type, a.c.child_id]
            frm: Any = a
            per_type = []
            self._local.n = self._local.columns = 0  # a statement of its own: aliases from t1
            for t in self._targets(ft):
                tgt = self.alias(t)
                frm = frm.outerjoin(tgt, and_(a.c.child_type == t, a.c.child_id == tgt.c.id))
                nf = self._name_col(t)
                nl = f"n_{len(per_type)}"
                al = f"a_{len(per_type)}"
                cols.append((tgt.c[nf] if nf else literal(None)).label(nl))
                cols.append(tgt.c[ACTIVE].label(al))
                per_type.append((t, nl, al))
            pids = sorted({pid for _, _, pid in items})
            values: dict[int, list[dict[str, Any]]] = {pid: [] for pid in pids}
            for i in range(0, len(pids), 500):
                chunk = pids[i:i + 500]
                stmt = select(*cols).select_from(frm).where(a.c.parent_id.in_(chunk)).order_by(
                    a.c.parent_id, a.c.idx)
                for r in conn.execute(stmt).mappings():
                    for t, nl, al in per_type:
                        if r["child_type"] != t:
                            continue
                        if r[al] is None:
                            raise Passthrough(f"linked {t} {r['child_id']} is not in the cache")
                        if r[al]:
                            values[r["parent_id"]].append({"type": t, "id": r["child_id"], "name": r[nl]})
            for ent, name, pid in items:
                ent[name] = values[pid]


def reader_for(store: Store) -> ReadEngine:
    """A ReadEngine that passes through reads needing fields still being backfilled."""
    pending = store.unready_fields()
    return ReadEngine(store, is_ready=lambda t, f: (t, f) not in pending)
