"""`sgcache mock`: run the mock site (a thin wrapper over sgcache.mock.runner)."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Public interface to listen on.")
@click.option("--port", default=8020, show_default=True, type=int, help="Public port (0 = pick a free one).")
@click.option("--admin-port", default=0, show_default=True, type=int,
              help="Loopback-only admin port for faults/stats/save (0 = pick a free one).")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False),
              help="Site schema JSON ({schema_read, schema_entity_read}); default: built-in studio schema.")
@click.option("--demo", type=int, default=None, help="Generate a demo site of about SIZE entities.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the demo generator.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False),
              help="Load the site from FILE if it exists; save it there on shutdown and on POST /save.")
@click.option("--api-user", "api_users", multiple=True, metavar="NAME:KEY[:noevents]",
              help="Add an ApiUser script (repeatable); ':noevents' turns its event generation off.")
@click.option("--human-user", "human_users", multiple=True, metavar="LOGIN:PASSWORD",
              help="Create a HumanUser (or set an existing one's password) for login auth (repeatable).")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every request.")
@click.option("--error-rate", type=float, default=0.0, help="Share of requests answered HTTP 502/503/504.")
@click.option("--drop-rate", type=float, default=0.0, help="Share of connections closed without an answer.")
@click.option("--outage", type=float, default=0.0, help="Answer everything 503 for the first N seconds.")
@click.option("--event-delay", type=float, default=0.0, help="Seconds a delayed event id stays invisible.")
@click.option("--event-delay-rate", type=float, default=0.0, help="Share of events committed late.")
@click.option("--event-gap-rate", type=float, default=0.0, help="Share of event ids that never appear.")
@click.option("--fault-seed", type=int, default=None, help="Seed for the fault injection choices.")
@click.option("--log-level", default="warning", show_default=True)
def mock(host: str, port: int, admin_port: int, schema_file: str | None, demo: int | None, seed: int,
         state_file: str | None, api_users: tuple[str, ...], human_users: tuple[str, ...], latency: float, error_rate: float,
         drop_rate: float, outage: float, event_delay: float, event_delay_rate: float,
         event_gap_rate: float, fault_seed: int | None, log_level: str) -> None:
    """Run a mock ShotGrid site speaking the api3 wire protocol.

    Prints one line `sgcache-mock: url=... script_name=... script_key=... admin=...`
    once the sockets are bound.
    """
    from ..mock.runner import Options, parse_api_user, parse_human_user, serve

    for spec in api_users:
        try:
            parse_api_user(spec)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--api-user")
    for spec in human_users:
        try:
            parse_human_user(spec)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--human-user")
    faults = {"latency": latency, "error_rate": error_rate, "drop_rate": drop_rate,
              "event_delay": event_delay, "event_delay_rate": event_delay_rate,
              "event_gap_rate": event_gap_rate}
    if outage:
        faults["outage"] = outage
    if fault_seed is not None:
        faults["seed"] = fault_seed
    serve(Options(host=host, port=port, admin_port=admin_port, schema=schema_file, demo=demo, seed=seed,
                  state=state_file, api_users=list(api_users), human_users=list(human_users), faults=faults,
                  log_level=log_level))
