"""The `sgcache` command: one click group, one module per verb, each a thin call into library code.

May import anything below it; nothing imports it (but `python -m sgcache.cli`). The verb
modules import their heavy dependencies inside the commands, so `sgcache --help` stays fast.
"""

from __future__ import annotations

import click

from .. import __version__
from .ctrl import ctrl
from .demo import demo
from .events import events
from .mock import mock
from .rebuild import rebuild
from .scan import scan
from .schema import schema
from .serve import serve
from .shadow import shadow
from .validate import validate


@click.group()
@click.version_option(__version__, prog_name="sgcache")
def main() -> None:
    """sgcache: a site-local, read-through cache for the ShotGrid api3 protocol."""


for _verb in (mock, schema, scan, serve, events, ctrl, validate, rebuild, demo, shadow):
    main.add_command(_verb)
