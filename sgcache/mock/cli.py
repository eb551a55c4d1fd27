"""`sgcache mock`: run the mock site."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8020, show_default=True, type=int)
def mock(host: str, port: int) -> None:
    """Run a mock ShotGrid site (placeholder until the mock lands)."""
    raise click.ClickException("mock site not built yet")
