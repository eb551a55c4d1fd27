"""Assemble and run a mock site: schema, data, accounts, sockets, uvicorn, state on exit.

``build_site`` is what tests and the CLI share; ``serve`` binds the public and
admin sockets itself (port 0 picks a free one) so the start-up line can print
the real ports before the server accepts connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from ..schema import Schema
from . import state as state_mod
from .events import CommitFaults
from .faults import FaultConfig, Stats
from .server import MockServer
from .site import Site
from .store import Store

log = logging.getLogger("sgcache.mock")


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8020
    admin_port: int = 0
    schema: str | None = None
    demo: int | None = None
    seed: int = 1
    state: str | None = None
    api_users: list[str] = field(default_factory=list)
    human_users: list[str] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)
    log_level: str = "warning"


def load_schema(path: str | None) -> Schema:
    if path:
        return Schema.load(path)
    from .builtin_schema import build_schema
    return build_schema()


def parse_api_user(spec: str) -> tuple[str, str, bool]:
    """NAME:KEY or NAME:KEY:noevents."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (
            len(parts) == 3 and parts[2] not in ("noevents", "events")):
        raise ValueError(f"--api-user expects NAME:KEY[:noevents], got {spec!r}")
    return parts[0], parts[1], not (len(parts) == 3 and parts[2] == "noevents")


def parse_human_user(spec: str) -> tuple[str, str]:
    """LOGIN:PASSWORD."""
    login, sep, password = spec.partition(":")
    if not sep or not login or not password:
        raise ValueError(f"--human-user expects LOGIN:PASSWORD, got {spec!r}")
    return login, password


def build_site(opts: Options, faults: FaultConfig | None = None) -> Site:
    """The site from state (if the file exists), else from schema + optional demo data."""
    if opts.state and Path(opts.state).exists():
        store = state_mod.load(opts.state)
        log.warning("loaded state %s (%d records)", opts.state, store.count())
    else:
        store = Store(load_schema(opts.schema))
        if opts.demo:
            from . import demo
            store.load_records(demo.generate(opts.demo, opts.seed))
            creds = getattr(demo, "DEMO_CREDENTIALS", None)
            if creds:
                store.meta["site_script"] = tuple(creds)
    site = Site(store, commit_faults=(faults.commit if faults else CommitFaults()))
    for spec in opts.api_users:
        name, key, events = parse_api_user(spec)
        site.add_api_user(name, key, events)
    for spec in opts.human_users:
        site.add_human_user(*parse_human_user(spec))
    return site


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without
    # it every response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


#: How long a thread may hold the GIL while another waits for it (CPython's default is 5 ms).
#: The site's RPCs run in worker threads and its event loop wakes latency-delayed requests,
#: reads bodies and sends answers: with the default, each of those steps could wait up to
#: 5 ms behind a page being rendered, which a hosted site, serving in parallel, never adds.
#: At `--latency 0.15` with 4 requests in flight: 10,091 -> 10,521 entities/s (4 rounds).
GIL_SWITCH_S = 0.0005


def serve(opts: Options) -> None:
    sys.setswitchinterval(GIL_SWITCH_S)
    faults = FaultConfig()
    faults.update(opts.faults)
    site = build_site(opts, faults)
    script_name, script_key = site.site_credentials()
    public = _bind(opts.host, opts.port)
    admin = _bind("127.0.0.1", opts.admin_port)
    port, admin_port = public.getsockname()[1], admin.getsockname()[1]
    url_host = opts.host if opts.host not in ("0.0.0.0", "::") else "127.0.0.1"
    site.base_url = f"http://{url_host}:{port}"

    def save() -> str | None:
        return state_mod.save(site.store, opts.state) if opts.state else None

    def save_on_exit() -> str | None:
        return state_mod.save_if_changed(site.store, opts.state) if opts.state else None

    app = MockServer(site, faults, Stats(), admin_port=admin_port, save=save)
    print(f"sgcache-mock: url={site.base_url} script_name={script_name} script_key={script_key} "
          f"admin=http://127.0.0.1:{admin_port}", flush=True)
    config = uvicorn.Config(app, lifespan="off", log_level=opts.log_level, access_log=False,
                            timeout_keep_alive=120)
    server = _Server(config, save_on_exit if opts.state else None)
    try:
        asyncio.run(server.serve(sockets=[public, admin]))
    finally:
        public.close()
        admin.close()


class _Server(uvicorn.Server):
    """Saves the state once connections are closed, still inside serve(): uvicorn
    re-raises SIGTERM/SIGINT when serve() returns, so code after it never runs."""

    def __init__(self, config: uvicorn.Config, on_exit: Any = None) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        if self.on_exit is not None:
            path = await asyncio.to_thread(self.on_exit)
            print(f"sgcache-mock: {'saved state to ' + path if path else 'state unchanged, not saved'}",
                  file=sys.stderr, flush=True)
