"""Text with an embedded NUL gets the site's answer, on both stores (issue 11, finding 7).

SQLite's LIKE reads a pattern, and the value it matches, only up to the first NUL:
`code contains "\\0"` matched every shot (the site: none), and a stored `zz\\0tail` did not
end with `tail`. PostgreSQL cannot bind NUL at all. Filter text holding NUL is now passed
through on both stores, and SQLite matches stored values whole (instr and byte
comparisons instead of LIKE).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from sgcache.mock.builtin_schema import build_schema
from sgcache.read.engine import Passthrough, ReadEngine
from sgcache.store.tables import Store, make_engine

from .dbs import new_db_url
from .test_read_engine import F, ids, read

NUL_FILTERS = [
    ("code", "contains", "\0"), ("code", "contains", "sh\0"), ("code", "not_contains", "\0"),
    ("code", "starts_with", "\0"), ("code", "ends_with", "\0"), ("code", "ends_with", "0\0"),
    ("code", "is", "sh0010\0"), ("code", "is_not", "\0"), ("code", "in", "\0", "x"), ("code", "not_in", "x\0"),
    ("sg_status_list", "is", "ip\0"), ("sg_status_list", "in", "\0"),
    ("sg_sequence", "name_contains", "\0"), ("sg_sequence", "name_ends_with", "\0"),
    ("sg_sequence.Sequence.code", "contains", "\0"), ("tag_list", "name_contains", "\0"),
]


@pytest.mark.parametrize("cond", NUL_FILTERS, ids=lambda c: f"{c[0]} {c[1]} {c[2:]!r}")
def test_filter_text_holding_nul_is_passed_through(reader, loaded_store, cond):
    with pytest.raises(Passthrough):
        read(reader, loaded_store, "Shot", F(cond))


# -- values holding NUL, as SQLite can store them (PostgreSQL cannot) -----------------------

SEQS = {1: "Seq\0Ω", 2: "plain"}
SHOTS: dict[int, dict[str, Any]] = {
    1: {"code": "zz\0tail", "sg_sequence": {"type": "Sequence", "id": 1}, "tag_list": ["a\0b", "hero"]},
    2: {"code": "ZZ\0TAİL", "sg_sequence": {"type": "Sequence", "id": 2}, "tag_list": ["b"]},
    3: {"code": "zz", "sg_sequence": None, "tag_list": []},
    4: {"code": "tail", "sg_sequence": None, "tag_list": ["a"]},
    5: {"code": None, "sg_sequence": None, "tag_list": []},
    6: {"code": "\0", "sg_sequence": None, "tag_list": []},
}


@pytest.fixture(scope="module")
def nul_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    for url in new_db_url("sqlite", tmp_path_factory.mktemp("nul")):
        engine = make_engine(url)
        store = Store(engine, build_schema())
        store.create()
        with engine.begin() as conn:
            store.upsert(conn, "Sequence", [{"id": i, "code": c} for i, c in SEQS.items()])
            store.upsert(conn, "Shot", [{"id": i, **r} for i, r in SHOTS.items()])
        yield store
        engine.dispose()


def site_text(kind: str, value: str | None, needle: str) -> bool:
    """The site's rule: compare case-folded, null text reads as ""."""
    v, s = (value or "").casefold(), needle.casefold()
    return {"contains": s in v, "not_contains": s not in v, "starts_with": v.startswith(s),
            "ends_with": v.endswith(s), "name_contains": s in v, "name_ends_with": v.endswith(s),
            "name_starts_with": v.startswith(s), "name_is": v == s}[kind]


@pytest.mark.parametrize("relation", ["contains", "not_contains", "starts_with", "ends_with"])
@pytest.mark.parametrize("needle", ["tail", "ail", "zz", "z", "TAİL", "i̇l"])
def test_stored_text_holding_nul_is_matched_whole(nul_store, relation, needle):
    reader = ReadEngine(nul_store)
    want = [i for i, r in SHOTS.items() if site_text(relation, r["code"], needle)]
    assert ids(read(reader, nul_store, "Shot", F(("code", relation, needle)))) == want


@pytest.mark.parametrize("relation", ["name_contains", "name_starts_with", "name_ends_with", "name_is"])
@pytest.mark.parametrize("needle", ["Ω", "ω", "seq", "plain"])
def test_stored_link_names_holding_nul_are_matched_whole(nul_store, relation, needle):
    reader = ReadEngine(nul_store)
    want = [i for i, r in SHOTS.items()
            if r["sg_sequence"] and site_text(relation, SEQS[r["sg_sequence"]["id"]], needle)]
    assert ids(read(reader, nul_store, "Shot", F(("sg_sequence", relation, needle)))) == want


def test_stored_tags_holding_nul_are_matched_whole(nul_store):
    reader = ReadEngine(nul_store)
    assert ids(read(reader, nul_store, "Shot", F(("tag_list", "name_contains", "b")))) == [1, 2]
    assert ids(read(reader, nul_store, "Shot", F(("tag_list", "is", "b")))) == [2]
    assert ids(read(reader, nul_store, "Shot", F(("tag_list", "name_is", "a")))) == [4]
