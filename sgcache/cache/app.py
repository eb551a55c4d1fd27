"""The HTTP face of the cache: `POST /api3/json` answered locally or passed through.

Reads the engine can answer exactly are served from the store; every other method,
and every read it cannot answer, is forwarded byte for byte with the caller's own
credentials. File endpoints are streamed through; browser pages redirect to the site.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..protocol import errors
from ..upstream import UpstreamUnavailable
from .auth import identity
from .read import Passthrough
from .service import CacheService

log = logging.getLogger("sgcache.http")

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                "proxy-authorization", "proxy-authenticate", "host", "content-length"}


class Metrics:
    """Prometheus metrics in an app-owned registry (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sgcache_requests_total", "api3 requests",
                                ["method", "outcome"], registry=self.registry)
        self.passthrough = Counter("sgcache_passthrough_total", "reads passed through, by reason",
                                   ["reason"], registry=self.registry)
        self.latency = Histogram("sgcache_request_seconds", "api3 request latency",
                                 ["method", "outcome"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


def _json(data: Any) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(),
                    media_type="application/json; charset=utf-8")


def _fault(f: errors.Fault) -> Response:
    return _json(f.body())


def _reason_key(reason: str) -> str:
    """Collapse a passthrough reason to a low-cardinality metric label."""
    return reason.split(" ", 3)[0] if reason else "unknown"


def create_app(service: CacheService, *, on_write: Callable[[str, Any, Any], Awaitable[None]] | None = None,
               extra_routes: list[Route] | None = None, lifespan: Any = None) -> Starlette:
    """Build the ASGI app around a CacheService. `on_write` receives passthrough writes."""
    metrics = Metrics()
    upstream = service.upstream
    config = service.config

    async def forward(body: bytes, method: str, request: Request) -> Response:
        try:
            resp = await upstream.post_json(body, method, request.headers)
        except UpstreamUnavailable as e:
            return _fault(e)
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS
                   and k.lower() != "content-encoding"}
        return Response(resp.content, status_code=resp.status_code, headers=headers)

    async def api3(request: Request) -> Response:
        t0 = time.perf_counter()
        method, outcome = "invalid", "fault"
        try:
            body = await request.body()
            if len(body) > config.max_body_bytes:
                return _fault(errors.Fault("Request body too large."))
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return _fault(errors.Fault("Invalid JSON in request body."))
            if not isinstance(payload, dict) or not isinstance(payload.get("method_name"), str):
                return _fault(errors.Fault("Request must be a JSON object with a 'method_name'."))
            method = payload["method_name"]
            params = payload.get("params") or []
            if not isinstance(params, list):
                return _fault(errors.Fault("'params' must be a list."))
            if method == "info":
                outcome = "served"
                return await info(body, request)
            if method == "read" and len(params) == 2 and isinstance(params[1], dict):
                response, outcome = await read(body, params[0], params[1], request)
                return response
            outcome = "passthrough"
            response = await forward(body, method, request)
            if on_write is not None and response.status_code == 200:
                await on_write(method, params, response.body)
            return response
        finally:
            dt = time.perf_counter() - t0
            metrics.requests.labels(method, outcome).inc()
            metrics.latency.labels(method, outcome).observe(dt)

    async def read(body: bytes, auth: Any, params: dict[str, Any], request: Request) -> tuple[Response, str]:
        etype = params.get("type")
        try:
            if not isinstance(etype, str) or etype not in service.store:
                raise Passthrough(f"uncached entity type {etype!r}")
            await service.auth.check(auth, etype)
            result = await run_in_threadpool(_read_sync, params)
        except Passthrough as p:
            log.info("passthrough read %s: %s", etype, p.reason)
            metrics.passthrough.labels(_reason_key(p.reason)).inc()
            return await forward(body, "read", request), "passthrough"
        except errors.AuthenticationFault as f:
            log.info("refused read %s by %s", etype, identity(auth) if isinstance(auth, dict) else "?")
            return _fault(f), "refused"
        except UpstreamUnavailable as f:
            return _fault(f), "fault"
        except errors.Fault:
            return await forward(body, "read", request), "passthrough"
        log.debug("served read %s for %s", etype, identity(auth))
        return _json({"results": result}), "served"

    def _read_sync(params: dict[str, Any]) -> dict[str, Any]:
        with service.store.engine.connect() as conn:
            return service.reader.read(conn, params)

    info_cache: dict[str, Any] = {}

    async def info(body: bytes, request: Request) -> Response:
        try:
            site = await upstream.call("info")
            info_cache["site"] = site
            status = "ok"
        except errors.Fault:
            site = info_cache.get("site") or {"version": [8, 0, 0]}
            status = "site unreachable"
        out = dict(site) if isinstance(site, dict) else {"version": site}
        out["sgcache"] = {"version": __version__, "status": status}
        return _json(out)

    async def raw_proxy(request: Request) -> Response:
        """Stream /upload, /file_serve, thumbnails and other non-RPC paths to the site."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            resp = await upstream.stream(request.method, request.url.path, headers=headers,
                                         body=request.stream(), query=request.url.query)
        except UpstreamUnavailable as e:
            return PlainTextResponse(f"0\n{e.message}\n", status_code=502)
        out_headers = {k: v for k, v in resp.headers.items()
                       if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"}
        return StreamingResponse(resp.aiter_raw(), status_code=resp.status_code, headers=out_headers,
                                 background=BackgroundTask(resp.aclose))

    async def browser_redirect(request: Request) -> Response:
        url = upstream.base_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(url, status_code=302)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/api3/json", api3, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *(extra_routes or []),
        Route("/detail/{rest:path}", browser_redirect, methods=["GET"]),
        Route("/page/{rest:path}", browser_redirect, methods=["GET"]),
        Route("/{rest:path}", raw_proxy, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    app.state.metrics = metrics
    return app
