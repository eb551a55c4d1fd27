"""The bulk writers' row building (`to_row`, `RowShape`) stores exactly what `to_db` says.

The scan and the event watcher build rows through per-shape builders instead of
`row_for`'s dicts; a value converted differently there would be a wrong answer served
from the cache, so each field type and the written rows are checked against `to_db`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from sgcache.mock.builtin_schema import build_schema
from sgcache.schema import FieldSchema
from sgcache.store.field_types import (
    _BY_TYPE,
    EventMetaField,
    MultiEntityField,
    UncachedField,
    field_type,
)
from sgcache.store import tables
from sgcache.store.tables import Store, make_engine

from .dbs import BACKENDS, new_db_url


class Sub(dict):  # type: ignore[type-arg]
    pass


VALUES: list[Any] = [
    None, "", "Hero", "Straße ǅ", "tab\tnul\x00", 0, 7, -3, 2**40, 1.5, float("nan"), True, False,
    "2026-12-02", "2026-12-02T10:00:00Z", [], ["VFX"], ["hero", "Réshoot", 3], ("a",),
    {"type": "Shot", "id": 5}, {"type": "Shot", "id": "6", "name": "x"}, {"type": "", "id": 5},
    {"type": "Shot", "id": None}, {"type": "Shot"}, Sub(type="Asset", id=2),
    {"content_type": None, "link_type": "upload", "name": "a.mov", "url": "http://x/a"},
    {"b": 1, "a": [1, {"é": None}]},
    {"entity_type": "ApiUser", "attribute_name": "salted_password", "field_data_type": "password"},
    {"entity_type": "Shot", "attribute_name": "code", "field_data_type": "text", "new_value": "x"},
]


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    def nan(v: Any) -> bool:
        return isinstance(v, float) and math.isnan(v)
    return len(a) == len(b) and all(x == y or (nan(x) and nan(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("data_type", sorted(_BY_TYPE))
def test_to_row_is_to_db_in_column_order(data_type: str) -> None:
    fts = [field_type(FieldSchema("Shot", "code", data_type)), field_type(FieldSchema("Shot", "sg_x", data_type))]
    if data_type == "serializable":
        fts.append(field_type(FieldSchema("EventLogEntry", "meta", data_type)))
        assert isinstance(fts[-1], EventMetaField)
    for ft in fts:
        if isinstance(ft, UncachedField):
            continue
        for v in VALUES:
            try:
                want = ft.to_db(v)
            except (TypeError, ValueError) as e:  # the same refusal from both
                with pytest.raises(type(e)):
                    ft.to_row(v)
                continue
            assert _same(ft.to_row(v), tuple(want[c] for c in ft.column_names)), (data_type, ft.name, v)
            if isinstance(ft, MultiEntityField):
                assert ft.to_row(v) == ()


@pytest.mark.parametrize("etype", ["Shot", "Task", "Version", "HumanUser", "EventLogEntry"])
def test_row_shape_builds_what_row_for_says(etype: str) -> None:
    """`RowShape.build` converts links and folded text inline: the same columns and values
    as `row_for`, for every value, one field at a time and all fields at once."""
    store = Store(make_engine("sqlite://"), build_schema())
    et = store[etype]
    fields = [f for f in et.fields if not isinstance(et.fields[f], (UncachedField, MultiEntityField))]
    assert fields
    for v in VALUES:
        records = [{"id": 1, f: v} for f in fields] + [{"id": 2, **{f: v for f in fields}}]
        for rec in records:
            try:
                want = et.row_for(rec)
            except (TypeError, ValueError) as e:
                with pytest.raises(type(e)):
                    et.shape_of(tuple(rec)).build(rec)
                continue
            shape = et.shape_of(tuple(rec))
            got = dict(zip(shape.columns, shape.build(rec), strict=True))
            assert got.keys() == want.keys(), (etype, v)
            assert _same(tuple(got[c] for c in want), tuple(want.values())), (etype, rec)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    for url in new_db_url(request.param, tmp_path):
        engine = make_engine(url)
        s = Store(engine, build_schema())
        s.create()
        yield s
        engine.dispose()


def test_upsert_writes_what_row_for_says_whatever_the_key_order(store: Store) -> None:
    """Records with the same fields in other orders, and with fewer fields, in one upsert."""
    et = store["Shot"]
    full = {"id": 1, "type": "Shot", "code": "SH001", "description": "Été", "sg_cut_in": 1001,
            "sg_status_list": "ip", "sg_sequence": {"type": "Sequence", "id": 3, "name": "SQ"},
            "tag_list": ["Hero", "vfx"], "assets": [{"type": "Asset", "id": 9}], "image": "http://signed"}
    records = [
        full,
        {"id": 2, **{k: v for k, v in reversed(list(full.items())) if k != "id"}},
        {"id": 3, "code": "SH003", "sg_sequence": None, "tag_list": []},
        {"id": 4, "description": None, "sg_status_list": None},
    ]
    with store.engine.begin() as conn:
        store.upsert(conn, "Shot", records, active=True, version=10)
        got = {r["id"]: dict(r) for r in conn.execute(select(et.table)).mappings()}
        assert store.get_links(conn, "Shot", "assets", 2) == [{"type": "Asset", "id": 9}]
    for rec in records:
        want = et.row_for(rec)
        row = got[rec["id"]]
        assert {k: row[k] for k in want} == want
        assert row["_active"] is True or row["_active"] == 1
        assert row["_version"] == 10
    # columns a record left out keep their default (NULL), not another record's value
    assert got[4]["code"] is None and got[3]["description"] is None


def test_a_fresh_upsert_writes_new_rows_and_falls_back_when_one_exists(store: Store) -> None:
    """`fresh` (a full scan of a type whose table was empty) inserts rows and their links
    without comparing stored lists; when a row exists after all (the event watcher wrote it
    meanwhile), the guarded upsert decides: a newer row keeps its fields and links."""
    def shot(i: int, code: str, assets: list[int]) -> dict[str, Any]:
        return {"id": i, "code": code, "assets": [{"type": "Asset", "id": a} for a in assets]}

    with store.engine.begin() as conn:
        store.upsert(conn, "Shot", [shot(1, "one", [5, 5, 6]), shot(2, "two", [])], active=True, version=10,
                     fresh=True)
        assert store.get_links(conn, "Shot", "assets", 1) == [{"type": "Asset", "id": 5}, {"type": "Asset", "id": 6}]
        assert store.get_links(conn, "Shot", "assets", 2) == []
        # the watcher writes shot 3 with a later fetch; the scan's older page then holds it too
        store.upsert(conn, "Shot", [shot(3, "new", [7])], active=True, version=30)
        store.upsert(conn, "Shot", [shot(3, "old", [8, 9]), shot(4, "four", [9])], active=True, version=20,
                     fresh=True)
        et = store["Shot"]
        codes = dict(conn.execute(select(et.table.c.id, et.table.c.code)).all())
        assert codes == {1: "one", 2: "two", 3: "new", 4: "four"}
        assert store.get_links(conn, "Shot", "assets", 3) == [{"type": "Asset", "id": 7}]
        assert store.get_links(conn, "Shot", "assets", 4) == [{"type": "Asset", "id": 9}]
        # an older fetch of an existing row is a plain guarded upsert: it changes nothing
        store.upsert(conn, "Shot", [shot(1, "stale", [])], active=True, version=5, fresh=True)
        assert conn.execute(select(et.table.c.code).where(et.table.c.id == 1)).scalar() == "one"
        assert len(store.get_links(conn, "Shot", "assets", 1)) == 2
        # a list left under an id with no row belongs to no row: the scan drops such lists
        # when it plans an empty table, and the rows' lists then go in alone
        store.replace_links(conn, "Shot", "assets", {10: [{"type": "Asset", "id": 1}, {"type": "Asset", "id": 2}]})
        store.drop_orphan_links(conn, "Shot")
        assert store.get_links(conn, "Shot", "assets", 10) == []
        assert len(store.get_links(conn, "Shot", "assets", 1)) == 2  # rows' own lists stay
        store.upsert(conn, "Shot", [shot(10, "ten", [3])], active=True, version=40, fresh=True)
        assert store.get_links(conn, "Shot", "assets", 10) == [{"type": "Asset", "id": 3}]


def test_a_fresh_page_of_new_rows_never_reads_the_link_tables(store: Store) -> None:
    """A full scan of an empty table writes each new row's lists without looking for stored
    ones, on both databases: on PostgreSQL that lookup scanned whole link tables that had no
    statistics yet, once a page (a 20,000-Task load took 33 s instead of 1.5 s)."""
    et = store["Shot"]
    links = {t.name for t in et.assoc.values()}
    seen: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    records = [{"id": i, "code": f"SH{i}", "assets": [{"type": "Asset", "id": i + 100}]} for i in range(1, 21)]
    event.listen(store.engine, "before_cursor_execute", spy)
    try:
        with store.engine.begin() as conn:
            store.upsert(conn, "Shot", records, active=True, version=10, fresh=True)
    finally:
        event.remove(store.engine, "before_cursor_execute", spy)
    reads = [s for s in seen if any(f'"{t}"' in s or f" {t}" in s for t in links) and not s.lstrip().startswith("INSERT")]
    assert reads == []
    with store.engine.connect() as conn:
        assert store.get_links(conn, "Shot", "assets", 7) == [{"type": "Asset", "id": 107}]
        assert conn.execute(select(et.table.c.code).where(et.table.c.id == 20)).scalar() == "SH20"


@pytest.mark.postgres
def test_postgresql_id_lists_are_one_constant_array_not_a_cast_per_row(tmp_path: Path) -> None:
    """`ids_in` sends its ids as one array parameter that the server parses once. As a
    text parameter cast in the query, a sequential scan parsed the whole list again for
    every row it filtered (28 us a row for 500 ids)."""
    for url in new_db_url("postgresql", tmp_path):
        engine = make_engine(url)
        store = Store(engine, build_schema())
        store.create()
        t = store["Shot"].assoc["assets"]
        with engine.begin() as conn:
            store.replace_links(conn, "Shot", "assets", {i: [{"type": "Asset", "id": i}] for i in range(1, 50)})
            conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            q = select(t.c.parent_id).where(store.ids_in(t.c.parent_id, [3, 5, 99]))
            assert sorted(conn.execute(q).scalars()) == [3, 5]
            compiled = q.compile(dialect=conn.dialect)
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN VERBOSE " + str(compiled), compiled.params))
        engine.dispose()
        assert "Seq Scan" in plan and "'{3,5,99}'::bigint[]" in plan, plan
        assert "character varying" not in plan and "text)" not in plan, plan


@pytest.mark.postgres
def test_postgresql_rows_of_ordinary_values_never_take_the_slow_json_encoder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's bulk writes send rows as one JSON text made by orjson; only values it
    cannot write exactly (NaN, integers past 64 bits) take the standard library's encoder.
    Column names from SQLAlchemy are a `str` subclass that orjson refuses as keys, which
    sent every page of a scan through the slow encoder (a third of the writer's CPU)."""
    class NoStdlib:
        def dumps(self, *a: Any, **kw: Any) -> str:
            raise AssertionError("rows went through json.dumps")

    for url in new_db_url("postgresql", tmp_path):
        engine = make_engine(url)
        store = Store(engine, build_schema())
        store.create()
        monkeypatch.setattr(tables, "json", NoStdlib())
        recs = [{"id": i, "code": f"SH{i}", "description": "é", "sg_cut_in": i, "tag_list": ["hero"],
                 "sg_sequence": {"type": "Sequence", "id": 2}, "assets": [{"type": "Asset", "id": i}]}
                for i in (1, 2)]
        with engine.begin() as conn:
            store.upsert(conn, "Shot", recs, active=True, version=1, fresh=True)
            store.upsert(conn, "Shot", [{**recs[0], "code": "renamed"}], active=True, version=2)
        monkeypatch.undo()
        with engine.connect() as conn:
            et = store["Shot"].table
            assert dict(conn.execute(select(et.c.id, et.c.code)).all()) == {1: "renamed", 2: "SH2"}
            assert store.get_links(conn, "Shot", "assets", 2) == [{"type": "Asset", "id": 2}]
        engine.dispose()


def test_write_throughs_of_many_field_sets_keep_a_bounded_statement_cache(store: Store) -> None:
    """Each field set a write-through brings compiles its own statement; a caller choosing
    ever new sets must not grow the store's cache without end, nor lose a row."""
    store._stmts.limit = 8
    fields = ["code", "description", "sg_cut_in", "sg_cut_out", "sg_status_list", "tag_list"]
    records = []
    for i in range(1, 40):  # 39 different subsets of the fields
        rec = {"id": i, "type": "Shot", **{f: None for k, f in enumerate(fields) if i >> k & 1}, "code": f"SH{i}"}
        records.append(rec)
        with store.engine.begin() as conn:
            store.upsert(conn, "Shot", [rec], active=True, version=i)
        assert len(store._stmts) <= 8
    with store.engine.connect() as conn:
        got = {r.id: r.code for r in conn.execute(select(store["Shot"].table.c.id, store["Shot"].table.c.code))}
    assert got == {r["id"]: r["code"] for r in records}


def test_new_sqlite_databases_get_big_pages_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    """A new cache file gets SQLITE_PAGE_SIZE pages (a scan's index builds read each table
    once per index); a cache created with 4 KiB pages opens and writes as before."""
    import sqlite3

    from sgcache.store.tables import SQLITE_PAGE_SIZE
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as c:
        c.execute("PRAGMA page_size=4096")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t (x)")
    for path, want in ((tmp_path / "new.sqlite", SQLITE_PAGE_SIZE), (old, 4096)):
        engine = make_engine(f"sqlite:///{path}")
        store = Store(engine, build_schema())
        store.create()
        with engine.begin() as conn:
            store.upsert(conn, "Shot", [{"id": 1, "code": "a", "assets": [{"type": "Asset", "id": 2}]}], active=True)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == want
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert store.get_links(conn, "Shot", "assets", 1) == [{"type": "Asset", "id": 2}]
        engine.dispose()


@pytest.mark.parametrize("etype", ["Shot", "Version", "HumanUser"])
def test_sqlite_rows_bind_every_empty_value_as_sql_null(etype: str, tmp_path: Path) -> None:
    """The bulk writers bind each empty value through the driver's adapter for None: each
    one must be stored as SQL NULL, in every kind of column, by both upsert paths."""
    store = Store(make_engine(f"sqlite:///{tmp_path / 'nulls.sqlite'}"), build_schema())
    store.create()
    et = store[etype]
    fields = [f for f in et.fields if not isinstance(et.fields[f], (UncachedField, MultiEntityField))]
    rec = {"id": 7, **{f: None for f in fields}}
    shape = et.shape_of(tuple(rec))
    with store.engine.begin() as conn:
        store.upsert(conn, etype, [rec], active=True, version=1)
        store.upsert(conn, etype, [{**rec, "id": 8}], active=True, version=1, fresh=True)
        for i in (7, 8):
            types = conn.exec_driver_sql(
                f'SELECT {", ".join(f"typeof({c})" for c in shape.columns[1:])} FROM "{etype}" WHERE id = {i}').one()
            assert set(types) == {"null"}, dict(zip(shape.columns[1:], types))


_LINK = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["Asset", "Shot", ""]), "id": st.integers(1, 4)},
                          optional={"name": st.text(max_size=3)}),
    st.builds(lambda t, i: {"type": t, "id": str(i)}, st.sampled_from(["Asset", "Shot"]), st.integers(1, 4)),
    st.builds(lambda i: Sub(type="Asset", id=i), st.integers(1, 4)),
    st.just({"type": "Asset", "id": None}), st.just({"id": 3}), st.none(), st.just("Asset"))


def test_a_fresh_upsert_stores_the_lists_the_general_one_does(tmp_path: Path) -> None:
    """A full scan's fresh rows insert their lists as they come: the same links, de-duplicated,
    in the site's order, as the general upsert (which compares them with stored lists)."""
    stores = {}
    for fresh in (True, False):
        stores[fresh] = Store(make_engine(f"sqlite:///{tmp_path / f'links-{fresh}.sqlite'}"), build_schema())
        stores[fresh].create()
    next_id = iter(range(1, 10**6))

    @settings(max_examples=80, deadline=None)
    @given(lists=st.lists(st.one_of(st.none(), st.lists(_LINK, max_size=5)), min_size=1, max_size=6))
    def check(lists: list[Any]) -> None:
        ids = [next(next_id) for _ in lists]  # new rows in both stores
        got = {}
        for fresh, store in stores.items():
            with store.engine.begin() as conn:
                store.upsert(conn, "Shot", [{"id": i, "assets": v} for i, v in zip(ids, lists)],
                             active=True, version=1, fresh=fresh)
                got[fresh] = [store.get_links(conn, "Shot", "assets", i) for i in ids]
        assert got[True] == got[False]
    check()
    with stores[True].engine.connect() as conn:  # the examples did store links
        assert conn.exec_driver_sql('SELECT count(*) FROM "Shot__assets"').scalar() > 0
    for store in stores.values():
        store.engine.dispose()
