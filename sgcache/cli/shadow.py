"""`sgcache shadow report|clear`: the mismatches shadow reads found, and the quarantines they set.

Reads and writes `_sgcache_shadow` in the cache's database (sgcache/store/quarantine.py);
serving processes pick a cleared quarantine up within seconds (at once on `/status.json`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import build_config, common


def _table(config: Any) -> tuple[Any, Any]:
    from sqlalchemy import MetaData

    from ..store.quarantine import ensure, shadow_table
    from ..store.tables import make_engine
    engine = make_engine(config.database_url)
    table = shadow_table(MetaData())
    ensure(engine, table)
    return engine, table


@click.group()
def shadow() -> None:
    """Mismatches found by shadow reads (SGCACHE_SHADOW_RATE) and the shapes they quarantine."""


@shadow.command("report")
@common
@click.option("--all", "show_all", is_flag=True, help="Also list mismatches already cleared.")
@click.option("--limit", default=100, show_default=True, help="At most this many mismatches.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_cmd(show_all: bool, limit: int, as_json: bool, **kw: Any) -> None:
    """List mismatches and the quarantined shapes; exit 1 while any shape is quarantined."""
    from ..store.quarantine import mismatches
    engine, table = _table(build_config(kw))
    try:
        with engine.connect() as conn:
            rows = mismatches(conn, table, include_cleared=show_all, limit=limit)
    finally:
        engine.dispose()
    quarantined = sorted({(r["entity_type"], r["shape_key"]) for r in rows if r["quarantined"]})
    if as_json:
        click.echo(json.dumps({"quarantined_shapes": [{"entity_type": t, "shape_key": k} for t, k in quarantined],
                               "mismatches": rows}, indent=1, default=str))
    else:
        click.echo(format_report(rows, quarantined))
    sys.exit(1 if quarantined else 0)


def format_report(rows: list[dict[str, Any]], quarantined: list[tuple[str, str]]) -> str:
    if not rows:
        return "no shadow mismatches" + ("" if quarantined else "; nothing quarantined")
    lines = [f"{len(quarantined)} shape(s) quarantined (their reads pass through to the site)"]
    for r in rows:
        s = r["shape"] or {}
        what = " ".join(x for x in (
            f"filters [{', '.join(s.get('filters') or [])}]",
            f"fields [{', '.join(s.get('fields') or s.get('summaries') or [])}]",
            f"sorts [{', '.join(s['sorts'])}]" if s.get("sorts") else "",
            f"grouping [{', '.join(s['grouping'])}]" if s.get("grouping") else "") if x)
        state = "QUARANTINED" if r["quarantined"] else f"cleared {r['cleared_at']} by {r['cleared_by']}"
        if s.get("permission_group") is not None:  # serve/group_quarantine.py: the whole group
            lines.append(f"#{r['id']} {r['at']} {r['method']} {r['entity_type']} as permission group "
                         f"{s['permission_group']} (policy {json.dumps(s.get('policy'), sort_keys=True)})  "
                         f"{state.replace('QUARANTINED', 'GROUP QUARANTINED')}")
        else:
            lines.append(f"#{r['id']} {r['at']} {r['method']} {r['entity_type']} shape {r['shape_key']}  {state}")
        lines.append(f"    {what}")
        lines.append(f"    differs: {json.dumps(r['diff'], sort_keys=True)}  caller: {r['caller'] or '-'}")
    return "\n".join(lines)


@shadow.command("clear")
@common
@click.argument("ids", nargs=-1, type=int)
@click.option("--type", "types", multiple=True, help="Lift every quarantine of this entity type.")
@click.option("--group", "groups", multiple=True, help="Lift the quarantine of this permission group.")
@click.option("--all", "everything", is_flag=True, help="Lift every quarantine.")
def clear_cmd(ids: tuple[int, ...], types: tuple[str, ...], groups: tuple[str, ...], everything: bool,
              **kw: Any) -> None:
    """Lift the quarantine of mismatch IDs (their whole shape or group), of --type T, --group G, or --all."""
    if not (ids or types or groups or everything):
        raise click.UsageError("say which: mismatch IDs, --type T, --group G or --all")
    from ..serve.group_quarantine import clear_group, groups_of
    from ..store.quarantine import clear
    engine, table = _table(build_config(kw))
    try:
        with engine.begin() as conn:
            n = sum(clear_group(conn, table, g, by="operator") for g in {*groups, *groups_of(conn, table, ids)})
            n += clear(conn, table, by="operator", ids=ids, entity_types=[t for v in types for t in v.split(",") if t],
                       everything=everything)
    finally:
        engine.dispose()
    click.echo(f"cleared {n} mismatch(es); their shapes are answered locally again")
