"""`sgcache schema dump|filter`: read the site's schema and choose the cached subset."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from ..schema import Schema, load_rules
from .common import build_config, common


@click.group()
def schema() -> None:
    """Read and select the site's schema."""


@schema.command("dump")
@common
@click.option("-o", "--output", default="-", help="File to write (default stdout).")
def schema_dump(output: str, **kw: Any) -> None:
    """Write the site's schema (schema_read + schema_entity_read) as JSON."""
    from ..upstream import fetch_site_schema, make_upstream
    config = build_config(kw)

    async def run() -> Schema:
        up = make_upstream(config)
        try:
            return await fetch_site_schema(up)
        finally:
            await up.aclose()

    data = json.dumps(asyncio.run(run()).to_json(), indent=1, sort_keys=True)
    if output == "-":
        click.echo(data)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(data)


@schema.command("filter")
@click.option("--rules", "rules_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-i", "--input", "input_file", default="-", help="Schema JSON to filter (default stdin).")
@click.option("-o", "--output", default="-", help="File to write (default stdout).")
def schema_filter(rules_file: str, input_file: str, output: str) -> None:
    """Keep the types and fields that the rules select (e.g. `Shot.*`, `!*.image`)."""
    src = json.load(sys.stdin) if input_file == "-" else json.load(open(input_file, encoding="utf-8"))
    out = Schema.from_json(src).filtered(load_rules(rules_file))
    data = json.dumps(out.to_json(), indent=1, sort_keys=True)
    if output == "-":
        click.echo(data)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(data)
    click.echo(f"kept {len(out.entities)} types, {sum(len(e.fields) for e in out.entities.values())} fields",
               err=True)
