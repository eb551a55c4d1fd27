"""Read engine vs. its own SQL: what does answering a `read` cost above the database?

Loads the deterministic demo studio (default 1,000,000 entities) straight into a
PostgreSQL store, then times one realistic `find` through `ReadEngine.read` — three
conditions (a status list, a two-hop deep path through Shot and Sequence, a date
range), a sort, deep return fields and a 500-row page — against replaying the exact
SQL statements the engine emitted, with the same parameters, on a raw DBAPI cursor.
The ratio of the p50s is the engine's overhead (translation, row rendering, the
multi-entity fill); the target is within 2x.

    SGCACHE_PG_PORT=54350 .ci/pg-throwaway .venv/bin/python bench/read_vs_sql.py
    .venv/bin/python bench/read_vs_sql.py --db-url postgresql+psycopg://... --size 1000000

The database keeps the data between runs (a state key records the size loaded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event  # noqa: E402

from sgcache.mock.builtin_schema import build_schema  # noqa: E402
from sgcache.mock.demo import generate  # noqa: E402
from sgcache.read.engine import ReadEngine  # noqa: E402
from sgcache.store.tables import Store, make_engine  # noqa: E402

QUERY: dict[str, Any] = {
    "type": "Task",
    "filters": {"logical_operator": "and", "conditions": [
        {"path": "sg_status_list", "relation": "in", "values": ["ip", "rdy", "wtg"]},
        {"path": "entity.Shot.sg_sequence.Sequence.code", "relation": "starts_with", "values": ["SQ0"]},
        {"path": "due_date", "relation": "between", "values": ["2024-03-01", "2026-06-30"]},
    ]},
    "return_fields": ["content", "sg_status_list", "due_date", "entity", "step.Step.code", "task_assignees"],
    "sorts": [{"field_name": "due_date", "direction": "desc"}],
    "paging": {"entities_per_page": 500, "current_page": 1},
    "return_paging_info_without_counts": True,
}


def load(store: Store, size: int, seed: int = 1) -> None:
    """Create the tables and stream the demo site in, batched per type."""
    with store.engine.connect() as conn:
        try:
            if store.get_state(conn, "bench_size") == size:
                print(f"reusing loaded store ({size:,} entities)", flush=True)
                return
        except Exception:  # noqa: BLE001 - no tables yet
            conn.rollback()
    store.drop_all()
    store.create()
    t0 = time.perf_counter()
    batch: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    n = 0

    def flush(conn: Any, key: tuple[str, bool]) -> None:
        store.upsert(conn, key[0], batch.pop(key), active=key[1])

    with store.engine.begin() as conn:
        for etype, rec in generate(size, seed=seed):
            if etype not in store:
                continue
            rec = dict(rec)
            key = (etype, not rec.pop("__retired", False))
            batch[key].append(rec)
            n += 1
            if len(batch[key]) >= 2000:
                flush(conn, key)
            if n % 100_000 == 0:
                print(f"  loaded {n:,} in {time.perf_counter() - t0:.0f}s", flush=True)
        for key in list(batch):
            flush(conn, key)
        store.set_state(conn, "bench_size", size)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    print(f"loaded {n:,} entities in {time.perf_counter() - t0:.0f}s", flush=True)


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db-url", default=os.environ.get("SGCACHE_TEST_PG_URL"))
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if not args.db_url:
        sys.exit("needs --db-url or SGCACHE_TEST_PG_URL (e.g. run under .ci/pg-throwaway)")
    engine = make_engine(args.db_url)
    store = Store(engine, build_schema())
    load(store, args.size)
    reader = ReadEngine(store)

    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", capture)
        result = reader.read(conn, QUERY)
        event.remove(engine, "before_cursor_execute", capture)
        print(f"query returns {len(result['entities'])} entities; {len(statements)} SQL statement(s)")

        engine_t, sql_t = [], []
        for _ in range(3):  # warm both paths
            reader.read(conn, QUERY)
        raw = conn.connection.dbapi_connection
        for _ in range(args.runs):
            t0 = time.perf_counter()
            reader.read(conn, QUERY)
            engine_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with raw.cursor() as cur:
                for stmt, params in statements:
                    cur.execute(stmt, params)
                    cur.fetchall()
            sql_t.append(time.perf_counter() - t0)
    e, s = p50(engine_t) * 1000, p50(sql_t) * 1000
    print(f"entities: {args.size:,}  runs: {args.runs}")
    print(f"ReadEngine.read p50: {e:.1f} ms   same SQL on the database p50: {s:.1f} ms   ratio: {e / s:.2f}x")


if __name__ == "__main__":
    main()
