"""The `sgcache` command: one click group, each verb a thin call into library code."""

from __future__ import annotations

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="sgcache")
def main() -> None:
    """sgcache: a site-local, read-through cache for the ShotGrid api3 protocol."""


def _register() -> None:
    # Each feature package contributes its own verbs; the modules import their heavy
    # dependencies inside the commands, so `sgcache --help` stays fast.
    from .cache.cli import register as register_cache
    from .cache.sync_cli import register as register_sync
    from .mock.cli import mock

    main.add_command(mock)
    register_cache(main)
    from .cache.ops_cli import register as register_ops
    register_ops(main)
    register_sync(main)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
