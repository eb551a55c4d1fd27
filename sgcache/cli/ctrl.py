"""`sgcache ctrl status|poll|scan`: ask the running sync leader over its unix socket."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import build_config, common


@click.command()
@common
@click.argument("command", type=click.Choice(["status", "poll", "scan"]))
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the answer.")
def ctrl(command: str, timeout: float, **kw: Any) -> None:
    """Ask the running sync leader: `status`, `poll` (answers when caught up), `scan`."""
    from ..sync.control import send
    config = build_config(kw)
    try:
        out = send(config, command, timeout=timeout)
    except (ConnectionError, OSError) as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    click.echo(json.dumps(out, default=str))
    if not out.get("ok"):
        sys.exit(1)
