"""Credentials are not stored in clear by the cache: not in its database, not in its files.

The AuthVerifier keeps salted hashes only (test_units.py). The synced data must not
hold secrets either: the site's ApiUser `salted_password` ("Application Key") is a text
field, so a cache that stores it would hand every script key to any caller who may
read ApiUser; sgcache/store/field_types.py keeps it (like password fields) out of the cache.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..e2e.harness import Site
from .servers import Primed


def test_no_script_key_in_the_cache_database(site: Site, primed: Primed) -> None:
    engine = sa.create_engine(primed.db_url)
    try:
        md = sa.MetaData()
        md.reflect(engine)
        hits = []
        with engine.connect() as conn:
            for name, table in md.tables.items():
                for col in table.columns:
                    if isinstance(col.type, (sa.String, sa.Text)):
                        n = conn.execute(sa.select(sa.func.count()).select_from(table)
                                         .where(col == site.script_key)).scalar()
                        if n:
                            hits.append(f"{name}.{col.name}")
    finally:
        engine.dispose()
    assert not hits
