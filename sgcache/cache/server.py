"""Run the cache: uvicorn serving the app, with the sync loop in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

import uvicorn

from ..config import Config
from .app import create_app
from .rebuild import GatedReader, Readiness
from .service import CacheService
from .sync import SyncLoop

log = logging.getLogger("sgcache.server")


async def serve_async(config: Config, *, ready: asyncio.Event | None = None) -> None:
    svc = await CacheService.open(config)
    # Reads involving a type that `sgcache rebuild` is re-importing go to the site.
    svc.reader = GatedReader(svc.reader, Readiness(svc.store))  # type: ignore[assignment]
    sync = SyncLoop(svc) if config.watch_events else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(sync.run()) if sync else None
        try:
            yield
        finally:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await svc.aclose()

    app = create_app(svc, lifespan=lifespan, on_write=sync.on_write if sync else None)
    app.state.monitor.sync = sync  # leadership shows on /status and /metrics
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None,
                                           access_log=False, timeout_keep_alive=75))
    log.info("sgcache serving http://%s:%d for %s", config.host, config.port, config.shotgun_url)
    await server.serve()


def run_server(config: Config, workers: int = 1) -> None:
    if workers != 1:
        raise SystemExit("--workers > 1 is not supported yet; run several processes behind a balancer")
    asyncio.run(serve_async(config))
