"""Run the cache: uvicorn serving the app, with the sync loop in the same process.

`--workers N` runs N worker processes, each listening on the port with its own socket
(SO_REUSEPORT): the kernel spreads new connections evenly over them. With one shared
socket, whichever worker woke first accepted a burst of connections and kept them
(keep-alive clients stay on their connection), so a second worker added no throughput.
Where SO_REUSEPORT is missing, the supervisor binds one socket they share. Each worker is a whole server
with its own sync loop; the leader lock lets exactly one of them (across every host on
the same database) apply events and scans. A worker that dies is restarted. Workers
share their Prometheus metrics through a directory (prometheus_client's multiprocess
mode), so any worker's `/metrics` counts the requests of all of them.

uvicorn parses HTTP with httptools (a dependency; h11 otherwise): a local point read costs
the server a third less CPU that way (0.40 -> 0.27 ms, docs/benchmarks.md), and CPU per
request is what a saturated worker, or a stampede waiting in its queue, is made of. The
loop stays asyncio's own: uvloop saved another 0.03 ms, but under a burst of 2,000 new
connections it accepted them over seconds while it served the ones it had, so identical
reads arrived spread out and shared fewer site calls (4-5 per distinct read, against
1-2); asyncio accepts a whole burst at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any, AsyncIterator

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from ..config import Config
from ..runtime import CacheService
from ..sync.loop import SyncLoop
from ..sync.rebuild import Readiness, RebuildGate
from .app import create_app

log = logging.getLogger("sgcache.server")


async def serve_async(config: Config, *, ready: asyncio.Event | None = None,
                      sockets: list[socket.socket] | None = None) -> None:
    svc = await CacheService.open(config)
    # Reads involving a type that `sgcache rebuild` is re-importing go to the site.
    svc.read_gate = RebuildGate(Readiness(svc.store), lambda: svc.store.schema)  # type: ignore[attr-defined]
    # Write-through runs in every server; the event watcher and scans only when syncing.
    sync = SyncLoop(svc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(sync.run()) if config.watch_events else None
        try:
            yield
        finally:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await svc.aclose()

    app = create_app(svc, lifespan=lifespan, on_write=sync.on_write)
    if config.watch_events:
        app.state.monitor.sync = sync  # leadership shows on /status and /metrics
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None,
                                           access_log=False, timeout_keep_alive=75))
    log.info("sgcache serving http://%s:%d for %s (pid %d)", config.host, config.port, config.shotgun_url,
             os.getpid())
    await server.serve(sockets=sockets)


def run_server(config: Config, workers: int = 1) -> None:
    if workers < 1:
        raise SystemExit("--workers must be at least 1")
    if workers == 1:
        asyncio.run(serve_async(config))
        return
    # Each worker keeps its own shadow budget: together they stay within the configured one.
    Supervisor(config.replace(shadow_budget=config.shadow_budget / workers), workers).run()


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket of this worker's own on a port the other workers listen on too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(config: Config, sock: socket.socket | None) -> None:
    """Body of one worker process (spawned: a fresh interpreter); `sock` None: its own socket."""
    from ..logs import configure
    configure(json_logs=config.log_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; SIGTERM stops us
    asyncio.run(serve_async(config, sockets=[sock or reuseport_socket(config.host, config.port)]))


class Supervisor:
    """Binds the socket, keeps N workers running, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, config: Config, workers: int, restart_delay: float = 1.0) -> None:
        self.config = config
        self.workers = workers
        self.restart_delay = restart_delay
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.stopping = False

    async def _prepare(self) -> None:
        """Set the cache up once (an empty database gets its tables) before workers race to."""
        svc = await CacheService.open(self.config)
        await svc.aclose()

    def _start(self, sock: socket.socket | None) -> Any:
        p = self.ctx.Process(target=_worker, args=(self.config, sock), name="sgcache-worker", daemon=False)
        p.start()
        return p

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        asyncio.run(self._prepare())
        # prometheus_client's multiprocess switch, inherited by the spawned workers: every
        # worker then answers /metrics for all of them.
        metrics_dir = tempfile.mkdtemp(prefix="sgcache-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        sock: socket.socket | None = None
        if hasattr(socket, "SO_REUSEPORT"):
            # Fail here, not N times, if anything listens there: bound without SO_REUSEPORT,
            # so another server's workers on the same port are found, never joined.
            uvicorn.Config(None, host=self.config.host, port=self.config.port).bind_socket().close()  # type: ignore[arg-type]
        else:
            sock = uvicorn.Config(None, host=self.config.host, port=self.config.port).bind_socket()  # type: ignore[arg-type]
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info("sgcache supervisor (pid %d): %d workers on http://%s:%d", os.getpid(), self.workers,
                 self.config.host, self.config.port)
        self.procs = [self._start(sock) for _ in range(self.workers)]
        try:
            while not self.stopping:
                time.sleep(0.2)
                for i, p in enumerate(self.procs):
                    if not p.is_alive() and not self.stopping:
                        log.warning("worker %d exited with %s; restarting it", p.pid, p.exitcode)
                        mark_process_dead(p.pid, metrics_dir)
                        time.sleep(self.restart_delay)
                        self.procs[i] = self._start(sock)
        finally:
            for p in self.procs:
                if p.is_alive():
                    p.terminate()
            deadline = time.monotonic() + 15
            for p in self.procs:
                p.join(max(0.1, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(5)
            if sock is not None:
                sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
