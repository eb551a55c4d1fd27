"""The `sgcache` command: one click group, each verb a thin call into library code."""

from __future__ import annotations

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="sgcache")
def main() -> None:
    """sgcache: a site-local, read-through cache for the ShotGrid api3 protocol."""


def _register() -> None:
    # Each feature package contributes its own verbs; import lazily so that a
    # broken optional piece cannot take the whole CLI down.
    from .mock.cli import mock
    main.add_command(mock)
    try:
        from .cache.cli import register as register_cache
    except ImportError:  # pragma: no cover - during bootstrap only
        return
    register_cache(main)
    from .cache.sync_cli import register as register_sync
    register_sync(main)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
