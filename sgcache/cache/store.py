"""The SQL store: one table per entity type, one association table per multi-entity field.

SQLAlchemy Core only, so SQLite (embedded default, WAL) and PostgreSQL (production)
run the same code. Meta columns start with an underscore; link columns are
`<field>__type`/`<field>__id`; text fields carry a case-folded `<field>__ci` shadow.
The chosen schema is recorded in `_sgcache_fields` so every process agrees on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from typing import Any, Iterable, Iterator

from sqlalchemy import (BigInteger, Boolean, Column, ColumnElement, Engine, Index, Integer, MetaData,
                        String, Table, Text, any_, bindparam, cast, create_engine, true, delete, event,
                        func, or_, select, update)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from ..protocol.values import format_datetime, utcnow
from ..schema import EntitySchema, FieldSchema, Schema
from .fields import FieldType, MultiEntityField, field_type, text_type

ACTIVE = "_active"
CACHED_AT = "_cached_at"
EVENT_ID = "_event_id"
#: Microseconds (epoch) when the fetch that wrote the row started: a later fetch wins.
VERSION = "_version"
#: PostgreSQL writes of more rows than this go through COPY.
COPY_MIN_ROWS = 50


def make_engine(url: str, **kw: Any) -> Engine:
    """An engine tuned per backend: SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kw)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
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
        Column("exposed", Boolean, nullable=False),
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
        Index(f"ix_{entity.name}__active", self.table.c[ACTIVE])
        for ft in self.fields.values():
            for ix in ft.indexes(self.table):
                if ix.table is None:
                    self.table.append_constraint(ix)  # pragma: no cover
        self.assoc: dict[str, Table] = {}
        for fname, ft in self.fields.items():
            if isinstance(ft, MultiEntityField):
                t = Table(
                    f"{entity.name}__{fname}", md,
                    Column("parent_id", Integer, primary_key=True),
                    Column("idx", Integer, primary_key=True),
                    Column("child_type", String(64), nullable=False),
                    Column("child_id", Integer, nullable=False),
                )
                Index(f"ix_{entity.name}__{fname}_child", t.c.child_id, t.c.child_type)
                self.assoc[fname] = t

    def is_cached(self, field_name: str) -> bool:
        return field_name == "id" or field_name in self.fields

    def row_for(self, record: dict[str, Any]) -> dict[str, Any]:
        """Column values for the scalar/entity fields present in a wire record."""
        row: dict[str, Any] = {"id": int(record["id"])}
        for fname, value in record.items():
            ft = self.fields.get(fname)
            if ft is not None and not isinstance(ft, MultiEntityField):
                row.update(ft.to_db(value))
        return row


class Store:
    """All tables of the cached schema, plus the writes the sync paths need."""

    def __init__(self, engine: Engine, schema: Schema) -> None:
        self.engine = engine
        self.schema = schema
        self.md = MetaData()
        self.fields_table, self.state_table = _meta_tables(self.md)
        self.log_table = _log_table(self.md)
        self.entities: dict[str, EntityTable] = {
            etype: EntityTable(self.md, ent) for etype, ent in schema.entities.items()
        }
        self._tmp_names: dict[str, str] = {}  # table -> its staging table (`_copy_upsert`)

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
                        "cached": fname == "id" or ft is not None, "exposed": True,
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

    # -- state -----------------------------------------------------------------
    def get_state(self, conn: Connection, key: str, default: Any = None) -> Any:
        v = conn.execute(select(self.state_table.c.value).where(self.state_table.c.key == key)).scalar()
        return json.loads(v) if v is not None else default

    def set_state(self, conn: Connection, key: str, value: Any) -> None:
        t = self.state_table
        payload = json.dumps(value)
        res = conn.execute(update(t).where(t.c.key == key).values(value=payload))
        if res.rowcount == 0:
            conn.execute(t.insert().values(key=key, value=payload))

    def ids_in(self, column: Any, ids: list[int]) -> ColumnElement[bool]:
        """`column IN ids` that stays cheap for hundreds of ids.

        On PostgreSQL the ids go as ONE array parameter (`= ANY('{1,2,..}')`): psycopg
        rewrites every placeholder of a query in Python, which made a 500-id IN list cost
        more than running it. SQLite binds placeholders in C, so it keeps the IN list.
        """
        if self.dialect == "postgresql":
            literal = "{" + ",".join(str(int(i)) for i in ids) + "}"
            return column == any_(cast(bindparam(None, literal, type_=Text()), ARRAY(BigInteger())))
        return column.in_(ids)

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
               version: int | None = None) -> int:
        """Insert or update entities from wire records (only the fields present).

        Multi-entity values replace the stored list. With a `version` (when the fetch
        started), rows already written by a later fetch are left alone, links included.
        Returns the number of records.
        """
        et = self.entities[entity_type]
        now = format_datetime(utcnow())
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        multi: dict[str, dict[int, list[Any]]] = defaultdict(dict)
        n = 0
        for rec in records:
            n += 1
            row = et.row_for(rec)
            row[CACHED_AT] = now
            if active is not None:
                row[ACTIVE] = active
            if event_id is not None:
                row[EVENT_ID] = event_id
            if version is not None:
                row[VERSION] = version
            by_shape[tuple(sorted(row))].append(row)
            for fname in et.assoc:
                if fname in rec:
                    multi[fname][int(rec["id"])] = rec[fname] or []
        for shape, rows in by_shape.items():
            # Without an explicit flag, new rows are active and existing rows keep theirs.
            if self.dialect == "postgresql" and len(rows) > COPY_MIN_ROWS:
                self._copy_upsert(conn, et.table, shape, rows, guarded=version is not None)
            else:
                conn.execute(self._upsert_stmt(et.table, shape, guarded=version is not None), rows)
        if version is not None and multi:
            mine = self.ids_at_version(conn, entity_type, {i for v in multi.values() for i in v}, version)
            multi = defaultdict(dict, {f: {i: v for i, v in vals.items() if i in mine}
                                       for f, vals in multi.items()})
        for fname, values in multi.items():
            self.replace_links(conn, entity_type, fname, values)
        return n

    def replace_links(self, conn: Connection, entity_type: str, field_name: str,
                      values: dict[int, list[Any]]) -> None:
        """Replace whole multi-entity lists, de-duplicated, keeping the site's order.

        Only lists that differ from the stored ones are rewritten: a refresh re-stores
        every list of every touched entity, and most of them are unchanged, so reading
        them back is far cheaper than deleting and re-inserting them (index upkeep).
        """
        t = self.entities[entity_type].assoc[field_name]
        wanted = {pid: _link_keys(links) for pid, links in values.items()}
        stored: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for chunk in _chunks(sorted(wanted), 500):
            for pid, ct, cid in conn.execute(select(t.c.parent_id, t.c.child_type, t.c.child_id)
                                             .where(self.ids_in(t.c.parent_id, chunk))
                                             .order_by(t.c.parent_id, t.c.idx)):
                stored[pid].append((ct, cid))
        changed = [pid for pid, keys in wanted.items() if stored.get(pid, []) != keys]
        for chunk in _chunks(sorted(pid for pid in changed if pid in stored), 500):
            conn.execute(delete(t).where(self.ids_in(t.c.parent_id, chunk)))
        rows = [{"parent_id": pid, "idx": k, "child_type": ct, "child_id": cid}
                for pid in changed for k, (ct, cid) in enumerate(wanted[pid])]
        if rows and self.dialect == "postgresql" and len(rows) > COPY_MIN_ROWS:
            self._copy_rows(conn, t, ["parent_id", "idx", "child_type", "child_id"], rows)
        elif rows:
            conn.execute(t.insert(), rows)

    def _copy_upsert(self, conn: Connection, table: Table, cols: tuple[str, ...], rows: list[dict[str, Any]],
                     guarded: bool) -> None:
        """PostgreSQL bulk upsert: COPY into a temporary table, then one INSERT .. SELECT ..
        ON CONFLICT; the same result as `_upsert_stmt`, without a statement per row.

        The temporary table lives as long as the session (ON COMMIT DELETE ROWS empties
        it): creating and dropping it in every transaction cost catalog writes per batch.
        Its name carries the target's column signature, so after an ALTER a new one is
        made. The upsert moves the rows out of it (DELETE .. RETURNING), so a second use
        in the same transaction starts empty.
        """
        prep = self.engine.dialect.identifier_preparer
        target = prep.format_table(table)
        tmp = prep.quote(self._tmp_name(table))
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {tmp} "
                             f"(LIKE {target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        self._copy_rows(conn, table, list(cols), _last_per_id(rows), into=tmp)
        names = ", ".join(prep.quote(c) for c in cols)
        sets = ", ".join(f"{prep.quote(c)} = EXCLUDED.{prep.quote(c)}" for c in cols if c != "id")
        sql = (f"WITH moved AS (DELETE FROM {tmp} RETURNING {names}) "
               f"INSERT INTO {target} ({names}) SELECT {names} FROM moved ON CONFLICT (id) DO ")
        if not sets:
            sql += "NOTHING"
        else:
            sql += f"UPDATE SET {sets}"
            if guarded:
                v = prep.quote(VERSION)
                sql += f" WHERE {target}.{v} IS NULL OR {target}.{v} <= EXCLUDED.{v}"
        conn.exec_driver_sql(sql)

    def _tmp_name(self, table: Table) -> str:
        """The session's staging table for `table`, named after its columns and their types."""
        name = self._tmp_names.get(table.name)
        if name is None:
            sig = ",".join(f"{c.name}:{c.type!r}" for c in table.columns)
            digest = hashlib.sha1(sig.encode()).hexdigest()[:10]
            name = self._tmp_names[table.name] = f"_sgcache_tmp_{table.name[:40]}_{digest}"
        return name

    def _copy_rows(self, conn: Connection, table: Table, cols: list[str], rows: list[dict[str, Any]],
                   into: str | None = None) -> None:
        """Bulk insert with COPY in the caller's transaction (psycopg's executemany sends a
        statement per row, several times slower for the rows of a sync batch)."""
        dbapi = conn.connection.dbapi_connection
        prep = self.engine.dialect.identifier_preparer
        sql = f"COPY {into or prep.format_table(table)} ({', '.join(prep.quote(c) for c in cols)}) FROM STDIN"
        with dbapi.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            for r in rows:
                copy.write_row([r[c] for c in cols])

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

    def ids_at_version(self, conn: Connection, entity_type: str, ids: Iterable[int], version: int) -> set[int]:
        """Which of these rows were last written by the fetch of this version."""
        t = self.entities[entity_type].table
        out: set[int] = set()
        for chunk in _chunks(sorted(ids), 500):
            out.update(conn.execute(select(t.c.id).where(self.ids_in(t.c.id, chunk), t.c[VERSION] == version)).scalars())
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

    def counts(self, conn: Connection, entity_type: str) -> dict[str, int]:
        t = self.entities[entity_type].table
        rows = conn.execute(select(t.c[ACTIVE], func.count()).group_by(t.c[ACTIVE])).all()
        out = {"active": 0, "retired": 0}
        for active, n in rows:
            out["active" if active else "retired"] += n
        return out


def _link_keys(links: list[Any]) -> list[tuple[str, int]]:
    """A multi-entity value as stored: (type, id) in the site's order, first occurrence only."""
    out: dict[tuple[str, int], None] = {}
    for link in links:
        if isinstance(link, dict) and link.get("id") is not None and link.get("type"):
            out.setdefault((link["type"], int(link["id"])), None)
    return list(out)


def _last_per_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per id (the last): one INSERT .. ON CONFLICT may not touch a row twice."""
    return list({r["id"]: r for r in rows}.values())


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
