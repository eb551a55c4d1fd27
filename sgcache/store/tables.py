"""The SQL store: one table per entity type, one association table per multi-entity field.

SQLAlchemy Core only, so SQLite (embedded default, WAL) and PostgreSQL (production)
run the same code. Meta columns start with an underscore; link columns are
`<field>__type`/`<field>__id`; text fields carry a case-folded `<field>__ci` shadow.
The chosen schema is recorded in `_sgcache_fields` so every process agrees on it.

Why one module of ~770 lines: the bulk upsert paths of the two dialects (PostgreSQL's
`json_to_recordset`, SQLite's executemany) share the table layout and the version rule,
which must never drift apart.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections import defaultdict
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    create_engine,
    delete,
    event,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.types import UserDefinedType

from ..protocol.values import format_datetime, utcnow
from ..schema import EntitySchema, Schema
from .field_types import BoolField, EntityField, FieldType, FoldedField, MultiEntityField, field_type, fold
from .quarantine import shadow_table

log = logging.getLogger("sgcache.store")

ACTIVE = "_active"
CACHED_AT = "_cached_at"
EVENT_ID = "_event_id"
#: Microseconds (epoch) when the fetch that wrote the row started: a later fetch wins.
VERSION = "_version"


#: Compiled statements (and row orders) a Store keeps before starting over.
STATEMENTS_KEPT = 2048


class IdArrayText(UserDefinedType):  # type: ignore[type-arg]
    """A PostgreSQL `bigint[]` parameter sent as its text (`'{1,2,..}'`), untyped.

    The server then parses it once, as the parameter's value. A text parameter CAST to
    `bigint[]` in the query is parsed again for every row a sequential scan filters
    (the cast is not constant-folded): 28 us a row for 500 ids, which made a scan's
    stored-link lookups quadratic while a new table had no statistics. Formatting the
    text in Python costs a quarter of letting psycopg dump a list."""

    cache_ok = True
    render_bind_cast = True  # `%(p)s::BIGINT[]`: the server infers the parameter's type

    def get_col_spec(self, **kw: Any) -> str:
        return "BIGINT[]"


class _Bounded(dict):  # type: ignore[type-arg]
    """A cache that starts over when full: an evicted entry is only compiled again."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self) >= self.limit and key not in self:
            self.clear()
        super().__setitem__(key, value)


def _bind_none_quickly() -> None:
    """Give the sqlite3 driver an adapter for None, which binds it as NULL exactly as before.

    The driver binds int, float and str directly but sends every other value, None
    included, through its adapter registry; on a miss it asks the value and the protocol
    for `__conform__`/`__adapt__`, and the failed attribute look-ups cost ~0.25 µs per
    None: more than a full scan's row insert spends on several columns (most rows have
    null fields). A registered adapter is a dictionary hit. The registry is the module's
    (one per process): the adapter, `{}.get` (a C call returning None), changes no value.
    """
    if sqlite3.adapters.get((type(None), sqlite3.PrepareProtocol)) is None:
        sqlite3.register_adapter(type(None), {}.get)


#: Page size of new SQLite databases (existing files keep theirs).
SQLITE_PAGE_SIZE = 16384


def make_engine(url: str, **kw: Any) -> Engine:
    """An engine tuned per backend: SQLite gets WAL, a busy timeout and, in a new database,
    16 KiB pages (a full scan's index builds read each table once per index: a quarter of
    the page reads and WAL frames of 4 KiB pages cut its CPU ~5%; point reads map the file)."""
    if url.startswith("sqlite"):
        _bind_none_quickly()
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kw)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # before WAL: a new file only
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.close()

        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 20)
    kw.setdefault("pool_pre_ping", True)
    return create_engine(url, **kw)


def _meta_tables(md: MetaData) -> tuple[Table, Table]:
    fields_t = Table(
        "_sgcache_fields", md,
        Column("entity_type", String(64), primary_key=True),
        Column("field_name", String(128), primary_key=True),
        Column("data_type", String(32), nullable=False),
        Column("cached", Boolean, nullable=False),
        Column("columns", Text, nullable=False),  # JSON list of column names
        Column("site_def", Text, nullable=False),  # the site's FIELD_DEF, verbatim JSON
        Column("ready", Boolean, nullable=False, default=True),  # backfilled?
    )
    state_t = Table(
        "_sgcache_state", md,
        Column("key", String(128), primary_key=True),
        Column("value", Text, nullable=False),
    )
    return fields_t, state_t


def _log_table(md: MetaData) -> Table:
    """The audit log: one row per entity that an event batch, scan or write-through refreshed."""
    t = Table(
        "_sgcache_log", md,
        Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("at", String(26), nullable=False),
        Column("source", String(16), nullable=False),  # event | scan | write | rescan
        Column("ref", String(64)),  # last event id, scan kind, or api3 method
        Column("entity_type", String(64), nullable=False),
        Column("entity_id", Integer, nullable=False),
        Column("outcome", String(16), nullable=False),  # active | retired | gone | stale
        Column("detail", Text),
    )
    Index("ix__sgcache_log_entity", t.c.entity_type, t.c.entity_id)
    return t


def active_is(table: Table, active: bool) -> ColumnElement[bool]:
    """`_active` = 1 or 0 written as a literal, not a bound parameter: only then can SQLite
    prove that a query for retired rows may use `retired_index` (its planner matches a
    partial index's WHERE against the query's terms as written)."""
    return table.c[ACTIVE] == (true() if active else false())


def retired_index(table: Table) -> Index:
    """The ids of retired rows only: few, so small to build, and never picked for a query of
    active rows. (An index on `_active` itself cost a full sort per table in every scan, and
    SQLite's planner took it for every `_active = 1` read, walking half the index and then
    the table in place of a plain table scan that takes a third less time.)"""
    where = active_is(table, False)
    return Index(f"ix_{table.name}__retired", table.c.id, sqlite_where=where, postgresql_where=where)


class EntityTable:
    """The table of one cached entity type and the storage class of each field."""

    def __init__(self, md: MetaData, entity: EntitySchema) -> None:
        self.entity = entity
        self.name = entity.name
        self.fields: dict[str, FieldType] = {}
        cols: list[Column[Any]] = [
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column(ACTIVE, Boolean, nullable=False, default=True, server_default=true()),
            Column(CACHED_AT, String(20)),
            Column(EVENT_ID, BigInteger),
            Column(VERSION, BigInteger),
        ]
        for fname, fs in entity.fields.items():
            if fname == "id":
                continue
            ft = field_type(fs)
            if not ft.cacheable:
                continue
            self.fields[fname] = ft
            cols.extend(ft.columns())
        self.table = Table(entity.name, md, *cols)
        self.retired = retired_index(self.table)
        for ft in self.fields.values():
            for ix in ft.indexes(self.table):
                if ix.table is None:
                    self.table.append_constraint(ix)  # pragma: no cover
        #: field -> its wire-to-columns conversion, for the fields stored in this table
        #: (row_for runs for every row a sync writes: no per-field type checks there)
        self._to_db = {f: ft.to_db for f, ft in self.fields.items() if not isinstance(ft, MultiEntityField)}
        self._shapes: dict[tuple[str, ...], RowShape] = {}
        self.assoc: dict[str, Table] = {}
        for fname, ft in self.fields.items():
            if isinstance(ft, MultiEntityField):
                t = Table(
                    f"{entity.name}__{fname}", md,
                    Column("parent_id", Integer, primary_key=True),
                    Column("idx", Integer, primary_key=True),
                    Column("child_type", String(64), nullable=False),
                    Column("child_id", Integer, nullable=False),
                    # SQLite: the rows live in their key's B-tree, not in a rowid table with
                    # a second B-tree for the key (a scan inserts millions; ~30% cheaper).
                    sqlite_with_rowid=False,
                )
                Index(f"ix_{entity.name}__{fname}_child", t.c.child_id, t.c.child_type)
                self.assoc[fname] = t

    def is_cached(self, field_name: str) -> bool:
        return field_name == "id" or field_name in self.fields

    def row_for(self, record: dict[str, Any]) -> dict[str, Any]:
        """Column values for the scalar/entity fields present in a wire record."""
        row: dict[str, Any] = {"id": int(record["id"])}
        to_db = self._to_db
        for fname, value in record.items():
            conv = to_db.get(fname)
            if conv is not None:
                row.update(conv(value))
        return row

    def shape_of(self, keys: tuple[str, ...]) -> RowShape:
        """How to turn records with these keys (in this order) into rows: `row_for`'s
        columns as one list, built once per shape (a page's records all share one)."""
        shape = self._shapes.get(keys)
        if shape is None:
            if len(self._shapes) > 256:  # records of arbitrary key sets (write-through)
                self._shapes.clear()
            shape = self._shapes[keys] = RowShape(self, keys)
        return shape


class RowShape:
    """Rows for records of one key set: column names (id first, the rest in a fixed order,
    so records with the same fields in another order share a statement) and builders.

    A builder is a function generated for the shape (as `dataclasses` generates
    `__init__`): one expression per column, no loop over fields or per-value call, the
    bulk writers' rows in their statement's column order at once. Fields stored as they come
    (numbers, dates: `FieldType.to_db` itself) are read as they are; links, folded text and
    checkboxes are converted inline (as `EntityField.to_row`, `FoldedField.to_row` and
    `to_db` do: the test of `build` against `row_for` holds them to it); the other types
    through their `to_row`. Checkboxes go in as 0/1: the sqlite3 driver binds a bool only
    after a failed adapter look-up (PostgreSQL reads 0/1 as false/true)."""

    def __init__(self, et: EntityTable, keys: tuple[str, ...]) -> None:
        present = sorted(f for f in set(keys) if f in et.fields)
        kind = {f: type(et.fields[f]) for f in present}
        self.flags = tuple(f for f in present if kind[f] is BoolField)
        self.plain = tuple(f for f in present if kind[f].to_db is FieldType.to_db and kind[f] is not BoolField)
        self.multi = tuple(f for f in present if issubclass(kind[f], MultiEntityField))
        self.links = tuple(f for f in present if kind[f].to_row is EntityField.to_row)
        self.folded = tuple(f for f in present if kind[f].to_row is FoldedField.to_row)
        inline = {*self.plain, *self.multi, *self.links, *self.folded, *self.flags}
        self.convs = tuple((f, et.fields[f].to_row) for f in present if f not in inline)
        self._names = {f: et.fields[f].column_names for f in present}
        self.columns: tuple[str, ...] = (
            "id", *self.plain, *(c for f, _ in self.convs for c in self._names[f]),
            *(c for f in self.links for c in self._names[f]),
            *(c for f in self.folded for c in self._names[f]), *self.flags)
        self._builders: dict[tuple[Any, ...], Callable[..., tuple[Any, ...]]] = {}
        self.build = self.builder((), self.columns)

    def builder(self, meta: tuple[str, ...], order: tuple[str, ...]) -> Callable[..., tuple[Any, ...]]:
        """`(record, *values of meta) -> row`: `order` holds the shape's columns and `meta`
        (columns every row gets, such as `_version`) in any order."""
        key = (meta, order)
        got = self._builders.get(key)
        if got is None:
            got = self._builders[key] = self._generate(meta, order)
        return got

    def _generate(self, meta: tuple[str, ...], order: tuple[str, ...]) -> Callable[..., tuple[Any, ...]]:
        env: dict[str, Any] = {"fold": fold}
        body: list[str] = []  # statements before the row
        col: dict[str, str] = {"id": "int(r['id'])"}  # column -> its expression
        col.update({m: f"m{i}" for i, m in enumerate(meta)})
        # Field names are the site's: they appear in the code only as literals (repr).
        for f in self.plain:
            col[f] = f"r[{f!r}]"
        for j, (f, conv) in enumerate(self.convs):
            env[f"conv{j}"] = conv
            body.append(f"c{j} = conv{j}(r[{f!r}])")
            col.update({c: f"c{j}[{k}]" for k, c in enumerate(self._names[f])})
        for j, f in enumerate(self.links):
            t, i = self._names[f]
            body += [f"v = r[{f!r}]",
                     "if v is not None and isinstance(v, dict) and v.get('type') and (i := v.get('id')) is not None:",
                     f"    l{j}t = v['type']; l{j}i = i if i.__class__ is int else int(i)",
                     "else:",
                     f"    l{j}t = l{j}i = None"]
            col[t], col[i] = f"l{j}t", f"l{j}i"
        for j, f in enumerate(self.folded):
            c, ci = self._names[f]
            body.append(f"s{j} = r[{f!r}]")
            col[c], col[ci] = f"s{j}", f"(fold(s{j}) if isinstance(s{j}, str) else None)"
        for j, f in enumerate(self.flags):
            body.append(f"b{j} = r[{f!r}]")
            col[f] = f"(b{j} if b{j}.__class__ is not bool else (1 if b{j} else 0))"
        assert set(order) == set(col), "the order must name the shape's columns and meta"
        args = "".join(f", m{i}" for i in range(len(meta)))
        src = "\n".join([f"def build(r{args}):", *(f"    {line}" for line in body),
                         f"    return ({', '.join(col[c] for c in order)},)"])
        exec(compile(src, "<RowShape builder>", "exec"), env)  # noqa: S102 - text made here, names as literals
        return env["build"]  # type: ignore[no-any-return]


#: State key bumped on every schema change, so every process rebuilds its Store and ReadEngine.
SCHEMA_GENERATION = "schema_generation"


class Store:
    """All tables of the cached schema, plus the writes the sync paths need."""

    def __init__(self, engine: Engine, schema: Schema, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.engine = engine
        self.schema = schema
        self.clock = clock  # this host's clock (ns): versions on SQLite, which lives on one host
        self.md = MetaData()
        self.fields_table, self.state_table = _meta_tables(self.md)
        self.log_table = _log_table(self.md)
        self.shadow_table = shadow_table(self.md)  # shadow mismatches and quarantines
        self.entities: dict[str, EntityTable] = {
            etype: EntityTable(self.md, ent) for etype, ent in schema.entities.items()
        }
        #: Compiled bulk statements and row orders by shape (`_sqlite_many`, `_json_upsert`,
        #: `_table_order`, ...): write-throughs bring arbitrary field sets, hence a bound.
        self._stmts: _Bounded = _Bounded(STATEMENTS_KEPT)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __contains__(self, entity_type: object) -> bool:
        return entity_type in self.entities

    def __getitem__(self, entity_type: str) -> EntityTable:
        return self.entities[entity_type]

    # -- lifecycle -------------------------------------------------------------
    def create(self) -> None:
        """Create missing tables and record the chosen schema in the database."""
        self.md.create_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(delete(self.fields_table))
            rows = []
            for etype, et in self.entities.items():
                for fname, fs in et.entity.fields.items():
                    ft = et.fields.get(fname)
                    rows.append({
                        "entity_type": etype, "field_name": fname, "data_type": fs.data_type,
                        "cached": fname == "id" or ft is not None,
                        "columns": json.dumps(ft.column_names if ft else (["id"] if fname == "id" else [])),
                        "site_def": json.dumps(fs.to_site(), sort_keys=True), "ready": True,
                    })
            if rows:
                conn.execute(self.fields_table.insert(), rows)
            conn.execute(delete(self.state_table).where(self.state_table.c.key == "schema_entity"))
            conn.execute(self.state_table.insert(), [{
                "key": "schema_entity",
                "value": json.dumps(self.schema.to_schema_entity_read(), sort_keys=True)}])

    @classmethod
    def recorded_schema(cls, engine: Engine) -> Schema | None:
        """The schema recorded by `create`, or None if this database has none yet."""
        md = MetaData()
        fields_t, state_t = _meta_tables(md)
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(fields_t)).mappings().all()
                ent = conn.execute(select(state_t.c.value).where(state_t.c.key == "schema_entity")).scalar()
        except Exception:
            return None
        if not rows:
            return None
        schema_read: dict[str, dict[str, Any]] = defaultdict(dict)
        for r in rows:
            schema_read[r["entity_type"]][r["field_name"]] = json.loads(r["site_def"])
        return Schema.from_site(dict(schema_read), json.loads(ent) if ent else None)

    def drop_all(self) -> None:
        self.md.drop_all(self.engine)

    def upgrade_meta(self) -> None:
        """Bring an older database's bookkeeping tables up to date, in place.

        `_sgcache_fields.exposed` (always true, never read) was dropped: in a database made
        before, its NOT NULL would refuse every field a schema change records.
        """
        from sqlalchemy import inspect
        from sqlalchemy.exc import DBAPIError

        def has_it() -> bool:
            return "exposed" in {c["name"] for c in inspect(self.engine).get_columns(self.fields_table.name)}
        if has_it():
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql("ALTER TABLE _sgcache_fields DROP COLUMN exposed")
            except DBAPIError:
                if has_it():  # not just another process dropping it first
                    raise

    def upgrade_indexes(self) -> None:
        """An older database's `ix_<type>__active` becomes `retired_index`, in place: every
        table's, at the cost of one pass over it, once. Answers are the same either way, so
        a swap that fails (another process opening the database at once holds the lock, or
        made the index first) is left to the next open."""
        from sqlalchemy.exc import DBAPIError
        from sqlalchemy.schema import CreateIndex

        names = self._index_names()
        old = {f"ix_{t}__active" for t in self.entities} & names
        if not old:
            return
        for etype, et in self.entities.items():
            if f"ix_{etype}__active" not in old:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(CreateIndex(et.retired, if_not_exists=True))
                    conn.exec_driver_sql(f'DROP INDEX IF EXISTS "ix_{etype}__active"')
            except DBAPIError as e:
                log.warning("%s: the index on _active stays until the next start (%s)", etype,
                            type(e.orig).__name__)
                continue
            log.info("%s: the index of retired rows replaces the index on _active", etype)

    def _index_names(self) -> set[str]:
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            else:
                sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
            return {r[0] for r in conn.exec_driver_sql(sql)}

    def now_version(self) -> int:
        """A fetch's `_version` (take it before the fetch starts): microseconds since the epoch.

        On PostgreSQL it is the primary's own clock (`clock_timestamp()`), not this host's:
        the sync leader and API servers on other hosts write the same rows, and versions
        from two clocks would let a host whose clock runs behind lose a newer fetch's rows
        to an older one (or an older fetch win). One clock, read in a round trip before the
        fetch, orders fetches as they really started, as one host's clock does: a fetch
        started after another was stamped can only be stamped later. On SQLite, whose file
        lives on one host, that host's clock is the one clock.
        """
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                return int(conn.exec_driver_sql(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint").scalar())
        return self.clock() // 1000

    # -- state -----------------------------------------------------------------
    def unready_fields(self) -> set[tuple[str, str]]:
        """(type, field) pairs added by a schema change and not yet backfilled."""
        t = self.fields_table
        with self.engine.connect() as conn:
            return {(r[0], r[1]) for r in conn.execute(
                select(t.c.entity_type, t.c.field_name).where(t.c.ready == False))}  # noqa: E712

    def schema_generation(self) -> int:
        """How many schema changes this database has seen (processes compare it to reload)."""
        with self.engine.connect() as conn:
            return int(self.get_state(conn, SCHEMA_GENERATION, 0) or 0)

    def get_state(self, conn: Connection, key: str, default: Any = None) -> Any:
        v = conn.execute(select(self.state_table.c.value).where(self.state_table.c.key == key)).scalar()
        return json.loads(v) if v is not None else default

    def set_state(self, conn: Connection, key: str, value: Any) -> None:
        t = self.state_table
        payload = json.dumps(value)
        res = conn.execute(update(t).where(t.c.key == key).values(value=payload))
        if res.rowcount == 0:
            conn.execute(t.insert().values(key=key, value=payload))

    def set_states(self, conn: Connection, values: dict[str, Any]) -> None:
        """Several `set_state`s in one statement (an upsert): the event watcher saves its
        position and backlog with every batch, and each round trip counts there."""
        if not values:
            return
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(self.state_table).values([{"key": k, "value": json.dumps(v)} for k, v in values.items()])
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}))

    def ids_in(self, column: Any, ids: list[int]) -> ColumnElement[bool]:
        """`column IN ids` that stays cheap for hundreds of ids.

        On PostgreSQL the ids go as ONE array parameter (`= ANY('{1,2,..}')`, see
        `IdArrayText`): psycopg rewrites every placeholder of a query in Python, which made
        a 500-id IN list cost more than running it. On SQLite they go as one JSON array
        (`IN (SELECT value FROM json_each('[1,2,..]'))`): an IN list's placeholders are
        expanded in Python by SQLAlchemy on every execution, which cost more than the query.
        """
        if self.dialect == "postgresql":
            literal = "{" + ",".join(str(int(i)) for i in ids) + "}"
            return column == any_(bindparam(None, literal, type_=IdArrayText()))
        literal = "[" + ",".join(map(str, map(int, ids))) + "]"
        return column.in_(select(func.json_each(bindparam(None, literal, type_=Text())).table_valued("value").c.value))

    # -- writes ------------------------------------------------------------------
    def _upsert_stmt(self, table: Table, cols: Iterable[str], guarded: bool = False) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        set_ = {c: stmt.excluded[c] for c in cols if c != "id"}
        if not set_:
            return stmt.on_conflict_do_nothing(index_elements=["id"])
        if guarded:  # an older fetch never overwrites a newer one
            return stmt.on_conflict_do_update(
                index_elements=["id"], set_=set_,
                where=or_(table.c[VERSION].is_(None), table.c[VERSION] <= stmt.excluded[VERSION]))
        return stmt.on_conflict_do_update(index_elements=["id"], set_=set_)

    def upsert(self, conn: Connection, entity_type: str, records: Iterable[dict[str, Any]],
               *, active: bool | None = None, event_id: int | None = None,
               version: int | None = None, versions: dict[int, int] | None = None,
               fresh: bool = False) -> int:
        """Insert or update entities from wire records (only the fields present).

        Multi-entity values replace the stored list. With a `version` (when the fetch
        started), rows already written by a later fetch are left alone, links included.
        `versions` (id -> version) gives rows fetched at other times their own (the event
        watcher writes several fetches in one statement). Returns the number of records.

        `fresh`: the caller expects the rows to be new and no list to be stored under their
        ids (a full scan of a type whose table it found empty and whose orphan lists it
        dropped: `drop_orphan_links`). They are then inserted only where absent, and when
        every one was, their links are inserted as they come, without looking for stored
        lists: a scan writes millions, and on PostgreSQL that lookup sequentially scans a
        link table that has no statistics yet. If any row existed, the usual guarded
        upsert runs for all.
        """
        et = self.entities[entity_type]
        # The columns every row gets besides its fields, and their values (`tail`).
        meta: list[str] = [CACHED_AT]
        tail: list[Any] = [format_datetime(utcnow())]
        if active is not None:  # without it, new rows are active and existing rows keep theirs
            meta.append(ACTIVE)
            tail.append(1 if active else 0)  # as `RowShape` binds checkboxes
        if event_id is not None:
            meta.append(EVENT_ID)
            tail.append(event_id)
        own_versions = version is not None and bool(versions)
        if version is not None:
            meta.append(VERSION)
            if not own_versions:
                tail.append(version)
        by_shape: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        multi: dict[str, dict[int, list[Any]]] = defaultdict(dict)
        n = 0
        last: tuple[str, ...] | None = None  # a page's records share their keys: look up once
        for rec in records:
            n += 1
            keys = tuple(rec)
            if keys != last:
                last = keys
                shape = et.shape_of(keys)
                cols = self._table_order(et.table, shape.columns + tuple(meta))
                make = shape.builder(tuple(meta), cols)
                rows = by_shape.get(cols)
                if rows is None:
                    rows = by_shape[cols] = []
                lists = [(fname, multi[fname]) for fname in shape.multi]
            if own_versions:
                row = make(rec, *tail, versions.get(int(rec["id"]), version))  # type: ignore[union-attr]
            else:
                row = make(rec, *tail)
            rows.append(row)
            for fname, into in lists:
                into[row[0]] = rec[fname] or []
        written: set[int] | None = set() if self.dialect == "postgresql" else None
        guarded = version is not None
        if fresh and self._insert_new(conn, et, by_shape) == n:
            self._new_links(conn, et, multi)
            return n
        changed = 0  # SQLite: rows the statements wrote (the version guard may leave some alone)
        for cols, rows in by_shape.items():
            if written is not None:
                written |= self._json_upsert(conn, et.table, cols, [dict(zip(cols, r)) for r in rows],
                                             guarded=guarded, returning=bool(multi) and guarded)
            else:
                changed += self._sqlite_many(conn, ("upsert", et.name, cols, guarded), et.table,
                                             lambda cols=cols: self._upsert_stmt(et.table, cols, guarded=guarded),
                                             cols, rows)
        if version is not None and multi and (written is not None or changed != n):
            # Links only of the rows this fetch wrote (PostgreSQL said which; SQLite is asked,
            # unless its count of changed rows says every record was written, as in a scan).
            mine = written if written is not None else \
                self.ids_at_version(conn, entity_type, {i for v in multi.values() for i in v},
                                    version if not versions else _VersionOf(versions, version))
            multi = defaultdict(dict, {f: {i: v for i, v in vals.items() if i in mine}
                                       for f, vals in multi.items()})
        self.replace_links_many(conn, entity_type, multi)
        return n

    def _table_order(self, table: Table, cols: tuple[str, ...]) -> tuple[str, ...]:
        """These columns in the table's order: compiled INSERTs list their columns in it,
        so rows built in it are bound as they are. Plain `str` names: SQLAlchemy's are a
        subclass, which orjson refuses as keys, so PostgreSQL's JSON rows (`_json_param`)
        fell back to the standard library's encoder (2 s of a 200k scan's 10 CPU-s)."""
        key = ("order", table.name, cols)
        got = self._stmts.get(key)
        if got is None:
            want = set(cols)
            got = self._stmts[key] = tuple(str(c.name) for c in table.columns if c.name in want)
        return got  # type: ignore[no-any-return]

    def _insert_new(self, conn: Connection, et: EntityTable,
                    by_shape: dict[tuple[str, ...], list[tuple[Any, ...]]]) -> int:
        """Insert the rows whose id is absent (`upsert`'s `fresh`); how many it inserted."""
        n = 0
        for cols, rows in by_shape.items():
            if self.dialect == "postgresql":
                n += self._json_insert_new(conn, et.table, cols, [dict(zip(cols, r)) for r in rows])
            else:
                n += self._sqlite_many(conn, ("insert_new", et.name, cols), et.table,
                                       lambda: sqlite_insert(et.table).on_conflict_do_nothing(index_elements=["id"]),
                                       cols, rows)
        return n

    def _new_links(self, conn: Connection, et: EntityTable, multi: dict[str, dict[int, list[Any]]]) -> None:
        """The links of rows just inserted, none stored before (`upsert`'s `fresh`): inserted
        as they come. (Looking for stray lists under their ids cost ~4% of a scan's CPU.)"""
        for fname, vals in multi.items():
            if not vals:
                continue
            t = et.assoc[fname]
            self._insert_tuples(conn, t, ("parent_id", "idx", "child_type", "child_id"), _link_rows(vals))

    def replace_links(self, conn: Connection, entity_type: str, field_name: str,
                      values: dict[int, list[Any]]) -> None:
        """Replace whole multi-entity lists, de-duplicated, keeping the site's order."""
        self.replace_links_many(conn, entity_type, {field_name: values})

    def replace_links_many(self, conn: Connection, entity_type: str,
                           multi: dict[str, dict[int, list[Any]]]) -> None:
        """`replace_links` for several fields of one type at once.

        Only lists that differ from the stored ones are rewritten: a refresh re-stores
        every list of every touched entity and most are unchanged, so comparing them
        (one query for all fields) is far cheaper than deleting and re-inserting them.
        """
        et = self.entities[entity_type]
        wanted = {f: vals for f, vals in multi.items() if vals}
        if not wanted:
            return
        stored = self._link_signatures(conn, et, {f: sorted(vals) for f, vals in wanted.items()})
        for fname, vals in wanted.items():
            t = et.assoc[fname]
            have = stored.get(fname, {})
            changed: dict[int, list[tuple[str, int]]] = {}
            for pid, links in vals.items():
                keys = _link_keys(links)
                old = have.get(pid)  # None: no stored list (empty)
                if (old != _signature(keys)) if old is not None else bool(keys):
                    changed[pid] = keys
            for chunk in _chunks(sorted(pid for pid in changed if pid in have), 500):
                conn.execute(delete(t).where(self.ids_in(t.c.parent_id, chunk)))
            self._insert_tuples(conn, t, ("parent_id", "idx", "child_type", "child_id"),
                                [(pid, k, ct, cid) for pid in sorted(changed) for k, (ct, cid) in enumerate(changed[pid])])

    def _link_signatures(self, conn: Connection, et: EntityTable,
                         ids: dict[str, list[int]]) -> dict[str, dict[int, str]]:
        """field -> parent id -> its stored list as `_signature` text (absent: empty list).

        PostgreSQL aggregates each list itself, all fields in one UNION ALL: one row per
        parent instead of one per link, and one round trip per type.
        """
        out: dict[str, dict[int, str]] = defaultdict(dict)
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import aggregate_order_by
            parts = []
            for fname, pids in ids.items():
                t = et.assoc[fname]
                link = t.c.child_type + literal(":") + cast(t.c.child_id, Text())
                parts.append(select(literal(fname).label("f"), t.c.parent_id,
                                    func.string_agg(link, aggregate_order_by(literal(","), t.c.idx)))
                             .where(self.ids_in(t.c.parent_id, pids)).group_by(t.c.parent_id))
            for fname, pid, sig in conn.execute(union_all(*parts) if len(parts) > 1 else parts[0]):
                out[fname][pid] = sig
            return out
        for fname, pids in ids.items():
            t = et.assoc[fname]
            lists: dict[int, list[tuple[str, int]]] = defaultdict(list)
            for chunk in _chunks(pids, 500):
                for pid, ct, cid in conn.execute(select(t.c.parent_id, t.c.child_type, t.c.child_id)
                                                 .where(self.ids_in(t.c.parent_id, chunk))
                                                 .order_by(t.c.parent_id, t.c.idx)):
                    lists[pid].append((ct, cid))
            out[fname] = {pid: _signature(keys) for pid, keys in lists.items()}
        return out

    def insert_rows(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Plain bulk INSERT of rows with the same keys: one statement on PostgreSQL (see
        `_insert_from_json`), executemany on SQLite (its driver binds rows in C)."""
        if not rows:
            return
        cols = tuple(rows[0])
        if self.dialect != "postgresql":
            get = itemgetter(*cols)
            self._sqlite_many(conn, ("insert", table.name, cols), table, table.insert, cols,
                              [get(r) for r in rows] if len(cols) > 1 else [(r[cols[0]],) for r in rows])
            return
        self._insert_json(conn, table, cols, rows)

    def _insert_tuples(self, conn: Connection, table: Table, cols: tuple[str, ...],
                       rows: list[tuple[Any, ...]]) -> None:
        """`insert_rows` of rows given as tuples in `cols` order."""
        if not rows:
            return
        if self.dialect != "postgresql":
            self._sqlite_many(conn, ("insert", table.name, cols), table, table.insert, cols, rows)
        else:
            self._insert_json(conn, table, cols, [dict(zip(cols, r)) for r in rows])

    def _insert_json(self, conn: Connection, table: Table, cols: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        key = ("insert", table.name, cols)
        stmt = self._stmts.get(key)
        if stmt is None:
            stmt = self._stmts[key] = self._insert_from_json(table, cols)
        conn.execute(stmt, {"rows": _json_param(table, rows)})

    def _sqlite_many(self, conn: Connection, key: tuple[Any, ...], table: Table, build: Any,
                     cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> int:
        """executemany of one statement on SQLite, compiled once per shape and run on the
        driver: SQLAlchemy's own executemany converts every row's parameters in Python,
        which cost more than SQLite's insert (a full scan writes millions of rows). Rows
        are tuples in `cols` order. The column types need no conversion for the driver
        (bool, int, float, str, None); columns the rows leave out get their scalar
        defaults, as SQLAlchemy would."""
        compiled = self._stmts.get(key)
        if compiled is None:
            c = build().compile(dialect=conn.dialect, column_keys=list(cols))
            order = tuple(c.positiontup or ())
            missing = tuple(k for k in order if k not in cols)
            defaults = tuple(table.c[k].default.arg for k in missing)  # type: ignore[union-attr]
            at = [(cols + missing).index(k) for k in order]
            pick = None if at == list(range(len(cols) + len(missing))) else \
                (itemgetter(*at) if len(at) > 1 else (lambda r, i=at[0]: (r[i],)))
            compiled = self._stmts[key] = (str(c), defaults, pick)
        sql, defaults, pick = compiled
        if defaults:
            rows = [r + defaults for r in rows]
        if pick is not None:
            rows = [pick(r) for r in rows]
        return int(conn.exec_driver_sql(sql, rows).rowcount)  # the rows it changed, summed

    def _json_upsert(self, conn: Connection, table: Table, cols: tuple[str, ...], rows: list[dict[str, Any]],
                     guarded: bool, returning: bool = True) -> set[int]:
        """PostgreSQL bulk upsert in ONE statement, the same result as `_upsert_stmt`.

        The rows travel as one JSON parameter expanded by `json_to_recordset`: one round
        trip per batch (no staging table, no COPY), a statement whose shape is fixed (so
        compiled and prepared once), the parsing done by the server, and RETURNING says
        which rows were written (the `_version` guard may leave some alone), when asked:
        only links need it (empty set otherwise).
        """
        key = ("upsert", table.name, cols, guarded, returning)
        stmt = self._stmts.get(key)
        if stmt is None:
            ins = self._insert_from_json(table, cols)
            set_ = {c: ins.excluded[c] for c in cols if c != "id"}
            if not set_:
                stmt = ins.on_conflict_do_nothing(index_elements=["id"])
            else:
                where = or_(table.c[VERSION].is_(None), table.c[VERSION] <= ins.excluded[VERSION]) \
                    if guarded else None
                stmt = ins.on_conflict_do_update(index_elements=["id"], set_=set_, where=where)
            stmt = self._stmts[key] = stmt.returning(table.c.id) if returning else stmt
        # One INSERT .. ON CONFLICT may not touch a row twice: the last record of an id wins.
        result = conn.execute(stmt, {"rows": _json_param(table, _last_per_id(rows))})
        return set(result.scalars()) if returning else set()

    def _json_insert_new(self, conn: Connection, table: Table, cols: tuple[str, ...],
                         rows: list[dict[str, Any]]) -> int:
        """PostgreSQL: `_insert_new` of one shape in one statement (as `_json_upsert`)."""
        key = ("insert_new", table.name, cols)
        stmt = self._stmts.get(key)
        if stmt is None:
            stmt = self._stmts[key] = self._insert_from_json(table, cols).on_conflict_do_nothing(
                index_elements=["id"]).execution_options(preserve_rowcount=True)  # an INSERT's is not kept
        # Duplicate ids insert once: the count then falls short and the caller upserts.
        return int(conn.execute(stmt, {"rows": _json_param(table, rows)}).rowcount)

    @staticmethod
    def _insert_from_json(table: Table, cols: tuple[str, ...]) -> Any:
        """PostgreSQL `INSERT INTO table (cols) SELECT .. FROM json_to_recordset(:rows) AS
        r(col type, ..)`: the rows of one JSON parameter (`_json_param`), for the bulk
        writers to add their ON CONFLICT clause to."""
        from sqlalchemy.dialects.postgresql import JSON, insert
        src = func.json_to_recordset(cast(bindparam("rows", type_=Text()), JSON())).table_valued(
            *(column(c, _plain_type(table.c[c].type)) for c in cols)).render_derived(name="r", with_types=True)
        return insert(table).from_select(list(cols), select(*(src.c[c] for c in cols)))

    def get_links(self, conn: Connection, entity_type: str, field_name: str, parent_id: int) -> list[dict[str, Any]]:
        t = self.entities[entity_type].assoc[field_name]
        rows = conn.execute(select(t.c.child_type, t.c.child_id).where(t.c.parent_id == parent_id)
                            .order_by(t.c.idx)).all()
        return [{"type": r[0], "id": r[1]} for r in rows]

    def set_active(self, conn: Connection, entity_type: str, ids: Iterable[int], active: bool,
                   event_id: int | None = None) -> None:
        t = self.entities[entity_type].table
        values: dict[str, Any] = {ACTIVE: active, CACHED_AT: format_datetime(utcnow())}
        if event_id is not None:
            values[EVENT_ID] = event_id
        for chunk in _chunks(list(ids), 500):
            conn.execute(update(t).where(self.ids_in(t.c.id, chunk)).values(**values))

    def ids_at_version(self, conn: Connection, entity_type: str, ids: Iterable[int],
                       version: int | dict[int, int]) -> set[int]:
        """Which of these rows were last written by the fetch of this version (or of each
        row's own version, given as a mapping)."""
        t = self.entities[entity_type].table
        out: set[int] = set()
        for chunk in _chunks(sorted(ids), 500):
            if isinstance(version, int):
                out.update(conn.execute(select(t.c.id).where(self.ids_in(t.c.id, chunk),
                                                             t.c[VERSION] == version)).scalars())
            else:
                out.update(i for i, v in conn.execute(select(t.c.id, t.c[VERSION]).where(
                    self.ids_in(t.c.id, chunk))) if v == version[i])
        return out

    def delete_rows(self, conn: Connection, entity_type: str, ids: Iterable[int], version: int) -> int:
        """Remove entities the site no longer shows at all, unless a later fetch wrote them."""
        et = self.entities[entity_type]
        t = et.table
        n = 0
        for chunk in _chunks(sorted(ids), 500):
            gone = list(conn.execute(select(t.c.id).where(
                self.ids_in(t.c.id, chunk), or_(t.c[VERSION].is_(None), t.c[VERSION] <= version))).scalars())
            if not gone:
                continue
            conn.execute(delete(t).where(self.ids_in(t.c.id, gone)))
            for a in et.assoc.values():
                conn.execute(delete(a).where(self.ids_in(a.c.parent_id, gone)))
            n += len(gone)
        return n

    def indexes(self, entity_type: str) -> list[Index]:
        """The secondary indexes of a type's table and its association tables."""
        et = self.entities[entity_type]
        return [ix for t in (et.table, *et.assoc.values()) for ix in sorted(t.indexes, key=lambda i: str(i.name))]

    def drop_indexes(self, conn: Connection, entity_type: str) -> None:
        """Drop them (a full scan of an empty table builds them once it is loaded:
        sorting a loaded table once costs far less than growing each index row by row)."""
        for ix in self.indexes(entity_type):
            ix.drop(conn, checkfirst=True)

    def drop_orphan_links(self, conn: Connection, entity_type: str) -> None:
        """Delete the type's lists whose parent row is gone (a rebuild's sweep; a full scan
        of an empty table, which then inserts its new rows' lists without looking for old
        ones). A row written meanwhile keeps its list: only parents absent now count."""
        t = self.entities[entity_type].table
        for a in self.entities[entity_type].assoc.values():
            conn.execute(delete(a).where(a.c.parent_id.not_in(select(t.c.id))))

    def ensure_indexes(self, conn: Connection, entity_type: str) -> None:
        """Create whichever of them is missing."""
        for ix in self.indexes(entity_type):
            self.ensure_index(conn, ix)

    def ensure_index(self, conn: Connection, ix: Index) -> None:
        """Create one of `indexes` unless it exists."""
        ix.create(conn, checkfirst=True)

    def is_empty(self, conn: Connection, entity_type: str) -> bool:
        t = self.entities[entity_type].table
        return conn.execute(select(t.c.id).limit(1)).first() is None

    def counts(self, conn: Connection, entity_type: str) -> dict[str, int]:
        """Rows by state: the total from the smallest index, the retired from theirs."""
        t = self.entities[entity_type].table
        total = select(func.count()).select_from(t).scalar_subquery()
        retired = select(func.count()).select_from(t).where(active_is(t, False)).scalar_subquery()
        n, r = conn.execute(select(total, retired)).one()  # one statement: one snapshot
        return {"active": n - r, "retired": r}


def _plain_type(col_type: Any) -> Any:
    """The type a JSON value is read as for a column (no collation: the INSERT assigns it)."""
    if isinstance(col_type, Boolean):
        return Boolean()
    if isinstance(col_type, Integer):  # BigInteger is an Integer
        return BigInteger()
    if isinstance(col_type, Float):
        return Float()
    return Text()


def _json_param(table: Table, rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON text, with orjson (several times faster than the standard library
    for a page of rows) unless a value needs the standard library's exact handling.

    orjson writes NaN/infinity as null without a word, so float columns are checked
    first; those values (no JSON form) travel as strings that PostgreSQL's float input
    reads back ('NaN', 'Infinity', '-Infinity'). Integers past 64 bits and lone
    surrogates make orjson refuse: the standard library then gives its own verdict.
    """
    floats = [c.name for c in table.columns if isinstance(c.type, Float) and c.name in rows[0]] if rows else []
    if not any(isinstance(r[c], float) and not math.isfinite(r[c]) for r in rows for c in floats):
        try:
            return orjson.dumps(rows).decode()
        except (orjson.JSONEncodeError, UnicodeDecodeError):
            pass
    try:
        return json.dumps(rows, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps([{k: _finite(v) for k, v in r.items()} for r in rows], ensure_ascii=False)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def _signature(keys: list[tuple[str, int]]) -> str:
    """A stored list as comparable text (type names never contain ':' or ',')."""
    return ",".join([f"{t}:{i}" for t, i in keys]) if keys else ""


def _link_keys(links: list[Any]) -> list[tuple[str, int]]:
    """A multi-entity value as stored: (type, id) in the site's order, first occurrence only."""
    if not links:  # most lists of a refresh are empty
        return []
    if len(links) == 1:  # most others hold one link: no de-duplication to do
        link = links[0]
        if link.__class__ is dict and (i := link.get("id")) is not None and (t := link.get("type")):
            return [(t, i if i.__class__ is int else int(i))]
    out: dict[tuple[str, int], None] = {}
    for link in links:
        if isinstance(link, dict) and link.get("id") is not None and link.get("type"):
            out.setdefault((link["type"], int(link["id"])), None)
    return list(out)


def _link_rows(vals: dict[int, list[Any]]) -> list[tuple[int, int, str, int]]:
    """Each parent's `_link_keys` as association rows (parent, idx, type, id)."""
    return [(pid, k, t, i) for pid, links in vals.items() if links for k, (t, i) in enumerate(_link_keys(links))]


class _VersionOf(dict):  # type: ignore[type-arg]
    """id -> its own version, else the batch's (for `ids_at_version`)."""

    def __init__(self, versions: dict[int, int], default: int) -> None:
        super().__init__(versions)
        self.default = default

    def __missing__(self, key: int) -> int:
        return self.default


def _last_per_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per id (the last): one INSERT .. ON CONFLICT may not touch a row twice."""
    return list({r["id"]: r for r in rows}.values())


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
