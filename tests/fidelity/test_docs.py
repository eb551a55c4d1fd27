"""The relation table in the docs is generated from the operator registry and kept current."""

from __future__ import annotations

from pathlib import Path

from sgcache.read.support import support_markdown, support_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "relations.md"


def test_docs_relations_table_is_current() -> None:
    assert DOC.read_text() == support_markdown(), "regenerate: python -m sgcache.read.support"


def test_every_site_relation_appears_in_the_table() -> None:
    from sgcache.mock.filters import RELATIONS
    table = support_table()
    assert {dt: set(rels) for dt, rels in RELATIONS.items()} == {dt: set(v) for dt, v in table.items()}
