"""The HTTP face of the cache: `POST /api3/json` answered locally or passed through.

Reads the engine can answer exactly are served from the store; every other method,
and every read it cannot answer, is forwarded byte for byte with the caller's own
credentials. File endpoints are streamed through; browser pages redirect to the site.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from .. import __version__
from ..protocol import errors, jsoncodec
from ..read.engine import Passthrough
from ..read.local_rpcs import LOCAL_RPCS
from ..read.point_reads import PointReads
from ..read.summarize import Summarizer
from ..runtime import CacheService
from ..store.replicas import Route as ReadRoute
from ..upstream import (
    RETRY_STATUSES,
    SAFE_METHODS,
    UpstreamUnavailable,
    method_label,
    unavailable_message,
)
from .auth import AuthVerifier, identity
from .coalesce import Answer, Coalescer, WriteClock
from .calls import Answering, Call, let_go
from .fairness import Fairness
from .intake import Intake
from .metrics import Metrics
from .relay import HOP_HEADERS, ClientSlots, Pace, RelayResponse, client_key, site_headers
from .shadow import Shadow
from .permission_policy import load_policy
from .permissions import Permissions, unprimed_types
from .status import Monitor
from .browse import Browser
from .browse.session import load_secret
from .outage_images import OutageImages
from .upload_writes import UploadWrite

log = logging.getLogger("sgcache.http")


#: Seconds the site's `info` answer is reused.
INFO_TTL = 30.0


def _json(data: Any) -> Response:
    return Response(jsoncodec.dumps(data), media_type="application/json; charset=utf-8")


def _base_of(scope: Any) -> str:
    """What `request.base_url` is made of (the answer's URLs depend on it), without
    building it: Starlette parses a URL for it, a few percent of a point read's time."""
    host = next((v for k, v in scope.get("headers") or () if k == b"host"), b"")
    return f"{scope.get('scheme')}|{host.decode('latin-1')}|{scope.get('server')}|{scope.get('root_path', '')}"


def _fault(f: errors.Fault) -> Response:
    return _json(f.body())


def create_app(service: CacheService, *, on_write: Callable[[str, Any, Any], Awaitable[None]] | None = None,
               extra_routes: list[Route] | None = None, lifespan: Any = None) -> Starlette:
    """Build the ASGI app around a CacheService. `on_write` receives passthrough writes."""
    metrics = Metrics(service.upstream)
    monitor = Monitor(service, metrics)
    shadow = Shadow(service, metrics)  # samples local answers, asks the site again, quarantines
    monitor.shadow = shadow
    verifier = AuthVerifier(service.upstream, ttl=service.config.auth_ttl, grace=service.config.auth_grace,
                            allow_scripts=service.config.allow_scripts, allow_logins=service.config.allow_logins)
    upstream = service.upstream
    config = service.config
    permissions = Permissions(load_policy(config.permissions), lambda: service.store, ttl=config.permissions_ttl,
                              unprimed=lambda: unprimed_types(service))
    monitor.permissions = permissions  # the status page lists the groups and their policy
    shadow.permissions = permissions  # a mismatch as a caller quarantines the caller's group

    slots = ClientSlots(config.transfer_per_client)  # transfers (raw paths) per client address
    # Turns of the loop and places in passthrough, shared round the callers (serve/fairness.py).
    fairness = Fairness(active=config.serve_active, per_caller_active=config.caller_active,
                        per_caller_passthrough=config.caller_passthrough, max_wait=config.caller_max_wait)

    # Identical concurrent passthrough reads share one site call (serve/coalesce.py); the
    # write clock in the data dir is shared by every worker, for read-your-writes.
    coalescer = Coalescer(WriteClock(Path(config.data_dir) / "coalesce.clock"), enabled=config.coalesce,
                          window=config.coalesce_window,
                          on_shared=lambda m, kind: metrics.coalesced.labels(method_label(m), kind).inc())
    # ... and identical concurrent reads share the whole answer, local or passed through.
    reads_in_flight = Coalescer(coalescer.clock, enabled=config.coalesce, window=0)

    async def send(body: bytes, method: str, request: Request) -> Answer:
        resp = await upstream.post_json(body, method, request.headers)
        return Answer(resp.status_code, tuple(site_headers(resp, decoded=True)), resp.content)

    async def forward(body: bytes, method: str, request: Request) -> Response:
        """The caller's api3 call sent on as-is (on the passthrough lane: its body is already
        read, so it holds a connection only while the site answers); the answer, Set-Cookie
        included, goes back to this caller only. Identical concurrent reads by the same
        credentials share one call (`Coalescer`); a write moves its caller's write clock."""
        params = getattr(request.state, "api3_params", None) or []  # set by `handle` once parsed
        auth = params[0] if params else None
        key = coalescer.key(method, params, request.headers)
        shared = False
        caller = getattr(request.state, "caller", None) or fairness.caller_key(client_key(request), auth)
        # Only a call that goes to the site gives its turn back (serve/fairness.py); an answer
        # shared with an identical call keeps it, so a flood of them is served in its turn.
        turn = getattr(request.state, "turn", None)

        # A read waits for the site (or for an identical call's answer) without its turn
        # and takes a turn again for the answer, so a caller whose reads the site answers
        # quickly cannot have them all worked on at once. A write keeps its answer
        # whatever the wait: it gives its turn back and does not queue for another.
        away = turn is not None and turn.held and method in SAFE_METHODS

        def site() -> Awaitable[Answer]:
            return fairness.site_call(None if away else turn, caller, lambda: send(body, method, request))

        async def call_site() -> tuple[Answer, bool]:
            if key is None:
                return await site(), False
            return await coalescer.call(key, method, auth, site)
        try:
            answer, shared = await (turn.away(call_site()) if away else call_site())
        except UpstreamUnavailable as e:
            return _fault(e)
        finally:
            if method not in SAFE_METHODS:  # a write, returned or failed (it may have been applied)
                coalescer.wrote(auth)
        if answer.status in RETRY_STATUSES:
            # A clear Fault rather than a bare 502/503/504, which the client would turn
            # into a ProtocolError, or retry itself even for a create.
            return _fault(UpstreamUnavailable(unavailable_message(method, answer.status)))
        out = Response(answer.body, status_code=answer.status)
        headers = answer.headers if not shared else tuple(  # the site's cookies answer its caller alone
            (k, v) for k, v in answer.headers if k.lower() != b"set-cookie")
        out.raw_headers = [*headers, *out.raw_headers]  # + content-length
        return out

    async def verify_head(auth: dict[str, Any]) -> None:
        """A large body's credentials, checked before the cache keeps more of it."""
        try:
            await verifier.check(auth, "HumanUser")
        except (errors.AuthenticationFault, UpstreamUnavailable):
            raise
        except errors.Fault:  # the site knew the caller and refused something else: not ours to judge
            pass

    intake = Intake(max_body_bytes=config.max_body_bytes, max_inflight_bytes=config.max_inflight_bytes,
                    max_unverified_body_bytes=config.max_unverified_body_bytes,
                    max_json_items=config.max_json_items, max_json_depth=config.max_json_depth,
                    verify=verify_head, refusal_delay=config.refused_body_delay)

    async def api3(request: Request) -> Response:
        t0 = time.perf_counter()
        call = Call()
        request.state.call = call
        try:
            response = await handle(request, call)
        except BaseException:  # cancelled: account for it now, there is no response to follow
            call.release_turns()
            account(request, call, None, time.perf_counter() - t0)
            raise
        dt = time.perf_counter() - t0
        # Counting and the request log line wait until the answer has gone out: they
        # are the server's bookkeeping, not the caller's latency. (No closure over the
        # response: response -> task -> closure -> response is a reference cycle per
        # request, and collecting those stalled the event loop for 20+ ms at a time.)
        response.background = BackgroundTask(account_after, request, call, response.status_code, dt)
        return Answering(response, call)  # type: ignore[return-value]  # an ASGI response

    async def account_after(request: Request, call: Call, status: int | None, seconds: float) -> None:
        account(request, call, status, seconds)  # async: a plain function would go to a thread

    def account(request: Request, call: Call, status: int | None, seconds: float) -> None:
        method, params = call.method, call.params
        label = method_label(method) if method != "invalid" else method
        auth = params[0] if params and isinstance(params[0], dict) else None
        etype = params[1].get("type") if len(params) > 1 and isinstance(params[1], dict) else None
        metrics.observe(label, call.outcome, seconds, reason=getattr(request.state, "passthrough_reason", None),
                        entity_type=etype if isinstance(etype, str) else None, auth=auth,
                        status=status)

    async def handle(request: Request, call: Call) -> Response:
        lease = intake.lease()  # the body's share of the in-flight budget, until the answer is ready
        turn = None
        try:
            body = await intake.read(request, lease)
            parsed = await intake.parse(body, lease)
            call.method, call.params = parsed.method or "invalid", parsed.params
            # Its caller's turn of the server (serve/fairness.py), given back while the site answers.
            request.state.caller = fairness.caller_key(client_key(request), parsed.params[0] if parsed.params else None)
            method, params = call.method, call.params
            a_read = parsed.verbatim is None and method in ("read", "summarize") and len(params) == 2 \
                and isinstance(params[1], dict)
            if not a_read:  # a read takes its turn in `shared_read`, unless it joins one that has
                request.state.turn = turn = await fairness.turn(request.state.caller)
            request.state.api3_params = parsed.params if parsed.verbatim is None else None  # for `forward`
            if parsed.verbatim is not None:  # beyond what the cache reads: the site decides
                call.outcome = "passthrough"
                request.state.passthrough_reason = parsed.verbatim
                return await forward(body, parsed.method, request)
            if method == "info":
                call.outcome = "served"
                return await info(body, request)
            if a_read:
                response, call.outcome = await shared_read(body, params, request, method)
                return response
            if method in LOCAL_RPCS and len(params) == 2:  # note threads, text search: where exact
                response, call.outcome = await local_rpc(body, params[0], params[1], request, method)
                return response
            call.outcome = "passthrough"
            request.state.passthrough_reason = "method"
            response = await forward(body, method, request)
            if on_write is not None and response.status_code == 200:
                try:
                    await on_write(method, params, response.body)
                    if service.replicas is not None:  # this caller's reads wait for it on a replica
                        await service.replicas.wrote(params[0] if params else None)
                except Exception:  # the write happened on the site; the sync catches up
                    log.exception("write-through of %s failed", method_label(method))
                coalescer.wrote(params[0] if params else None)  # in the store now: no read joins older
            return response
        except errors.Fault as f:
            response = _fault(f)
            if getattr(f, "close_connection", False):  # the rest of its body is not read either
                response.headers["connection"] = "close"
            return response
        except ClientDisconnect:  # the caller left mid-request: nobody to answer
            log.debug("client disconnected during %s", method_label(call.method))
            call.outcome = "disconnected"
            return Response(status_code=400)
        except Exception as e:  # never an HTTP 500: the caller gets a Fault it can read
            log.exception("internal error answering %s", method_label(call.method))
            return _fault(errors.Fault(f"sgcache internal error ({type(e).__name__}); "
                                       "the request was not answered."))
        finally:
            lease.release()
            if turn is not None:
                call.hold(turn)  # given back once the answer is out (serve/calls.py)

    async def shared_read(body: bytes, params: list[Any], request: Request, method: str) -> tuple[Response, str]:
        """`read`, or the answer of an identical one queued or running for the same credentials
        (serve/coalesce.py): a stampede's copies wait for one run, not each for its own, and
        only the one that runs takes a turn of the server (serve/fairness.py)."""
        async def mine() -> tuple[Response, str]:
            request.state.turn = turn = await fairness.turn(request.state.caller)
            try:
                return await read(body, params[0], params[1], request, method)
            finally:
                request.state.call.hold(turn)  # given back once the answer is out

        key = reads_in_flight.key(method, params, request.headers, _base_of(request.scope))
        if key is None:
            return await mine()

        async def run() -> Answer:
            response, outcome = await mine()
            headers = tuple((k, v) for k, v in response.raw_headers if k != b"content-length")
            return Answer(response.status_code, headers, response.body, outcome,
                          getattr(request.state, "passthrough_reason", None))
        answer, shared = await reads_in_flight.call(key, method, params[0], run)
        if shared:
            # A joiner's answer costs the server its response too: it takes its caller's
            # turn for it, or one caller's identical reads on many connections would all
            # be answered at once, ahead of every other caller.
            request.state.call.hold(await fairness.turn(request.state.caller))
            request.state.passthrough_reason = answer.reason
            metrics.coalesced.labels(method_label(method),
                                     "in_flight" if answer.outcome == "passthrough" else "local").inc()
        out = Response(answer.body, status_code=answer.status)
        out.raw_headers = [*(h for h in answer.headers if not shared or h[0].lower() != b"set-cookie"),
                           *out.raw_headers]  # + content-length
        return out, answer.outcome

    async def read(body: bytes, auth: Any, params: dict[str, Any], request: Request,
                   method: str = "read") -> tuple[Response, str]:
        """A `read` or `summarize`: answered from the store, or forwarded as sent."""
        etype = params.get("type")
        outage = outage_images.wanted(method, params)  # image fields while the site is down
        if outage is not None:
            params = outage[0]
        try:
            if not isinstance(etype, str) or etype not in service.store:
                raise Passthrough(f"uncached entity type {etype!r}")
            shadow.check(etype, method, params)  # a shape a shadow read found wrong goes to the site
            turn = getattr(request.state, "turn", None)  # not held while the site checks a new key
            await (turn.away(verifier.check(auth, etype)) if turn and not verifier.settled(auth)
                   else verifier.check(auth, etype))
            grant = permissions.cached(auth) or await run_in_threadpool(permissions.grant, auth)
            permissions.check_quarantine(grant)  # a group a shadow read found answered wrongly
            # On a replica when one is healthy and has this caller's writes (store/replicas.py).
            route = await service.replicas.route(auth) if service.replicas is not None else None
            if not grant.full:  # what the site shows this caller, or Passthrough
                result = await permissions.answer_point(
                    grant, method, params, lambda p: point_reads.answer(p, engine=route and route.engine)) \
                    or await run_in_threadpool(permissions.answer, service, grant, method, params, route)
            else:
                result = await point_reads.answer(params, engine=route and route.engine) \
                    if method == "read" else None
                if result is None:
                    result = await run_in_threadpool(_read_sync, params, method, route)
            if result is None:
                result = await run_in_threadpool(_read_sync, params, method)
        except Passthrough as p:
            log.debug("passthrough %s %.64s: %.300s", method, etype, p.reason)
            request.state.passthrough_reason = p.reason
            let_go(p)
            return await forward(body, method, request), "passthrough"
        except errors.AuthenticationFault as f:
            log.info("refused read %s by %s", etype, identity(auth))
            return _fault(f), "refused"
        except UpstreamUnavailable as f:
            return _fault(f), "fault"
        except errors.Fault as f:
            request.state.passthrough_reason = f"invalid request, site decides: {f.message}"
            let_go(f)
            return await forward(body, method, request), "passthrough"
        except Exception as e:  # a value the engine or database chokes on: the site decides
            log.warning("read engine failed on %.64s (%s: %.200s); passing the read through", etype,
                        type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
            request.state.passthrough_reason = "error"
            let_go(e)
            return await forward(body, method, request), "passthrough"
        log.debug("served read %s for %s", etype, identity(auth))
        if outage is not None:  # not a shadow sample: the site would have shown its own URLs
            return _json({"results": await outage_images.fill(result, etype, outage[1], request)}), "served"
        response = _json({"results": result})
        shadow.offer(method, params, body, response.body, auth, request.headers,  # maybe compared later
                     full_view=grant.full, grant=grant)
        return response, "served"

    async def local_rpc(body: bytes, auth: Any, params: Any, request: Request, method: str) -> tuple[Response, str]:
        """A note thread or a text search: from the store where exact (read/note_threads.py,
        read/text_search.py), for callers whose group sees everything; else forwarded as sent."""
        try:
            await verifier.check(auth, "Note")
            grant = permissions.cached(auth) or await run_in_threadpool(permissions.grant, auth)
            if not grant.full:  # what the site shows a restricted caller here is not documented
                raise Passthrough(f"{method}: the caller's permission group is not answered in full")
            permissions.check_quarantine(grant)
            shadow.check_rpc(method, params)  # a shape a shadow call found answered wrongly
            result = await run_in_threadpool(_rpc_sync, method, params)
        except Passthrough as p:
            log.debug("passthrough %s: %.300s", method, p.reason)
            request.state.passthrough_reason = p.reason
            let_go(p)
            return await forward(body, method, request), "passthrough"
        except errors.AuthenticationFault as f:
            return _fault(f), "refused"
        except UpstreamUnavailable as f:
            return _fault(f), "fault"
        except Exception as e:  # noqa: BLE001 - the site decides (its own Fault, or what the engine chokes on)
            log.warning("%s failed locally (%s: %.200s); passing it through", method, type(e).__name__, e)
            request.state.passthrough_reason = "error" if not isinstance(e, errors.Fault) else "invalid request"
            let_go(e)
            return await forward(body, method, request), "passthrough"
        response = _json({"results": result})
        shadow.offer(method, params, body, response.body, auth, request.headers)  # maybe compared later
        return response, "served"

    def _rpc_sync(method: str, params: Any) -> Any:
        with service.store.engine.connect() as conn:
            return LOCAL_RPCS[method](service.reader, conn, params, gate=getattr(service, "read_gate", None))

    point_reads = PointReads(service)
    browser = Browser(service, monitor, verifier, permissions)
    outage_images = OutageImages(service, browser.thumbs, load_secret(Path(config.data_dir)),
                                 site_down=lambda: upstream.site_down)

    def _read_sync(params: dict[str, Any], method: str = "read", route: ReadRoute | None = None) -> dict[str, Any]:
        gate = getattr(service, "read_gate", None)
        if gate is not None:  # e.g. types being rebuilt: Passthrough
            gate(params)
        reader = service.reader  # schema changes replace it: use the current one

        def run(conn: Any) -> dict[str, Any]:
            if method == "summarize":  # a Summarizer only holds references: one per call
                return Summarizer(reader).summarize(conn, params)
            return reader.read(conn, params)
        if route is not None:  # a replica, else (or if it fails) the primary
            return route.run(run)
        with service.store.engine.connect() as conn:
            return run(conn)

    info_cache: dict[str, Any] = {}

    async def info(body: bytes, request: Request) -> Response:
        """The site's info (every client connect asks for it), re-read at most every
        INFO_TTL seconds; the last copy while the site is down."""
        try:
            if "site" in info_cache and time.monotonic() - info_cache["at"] < INFO_TTL:
                site, status = info_cache["site"], "site unreachable" if upstream.site_down else "ok"
            else:
                if upstream.site_down and "site" in info_cache:
                    raise UpstreamUnavailable("the site is down")  # answer now, not after retries
                site = await upstream.call("info")
                info_cache.update(site=site, at=time.monotonic())
                status = "ok"
        except errors.Fault:
            site = info_cache.get("site") or {"version": [8, 0, 0]}
            status = "site unreachable"
        out = dict(site) if isinstance(site, dict) else {"version": site}
        out["sgcache"] = {"version": __version__, "status": status}
        return _json(out)

    async def raw_proxy(request: Request) -> Response:
        """Stream /upload, /file_serve, thumbnails and other non-RPC paths to the site.

        The whole transfer keeps to a `Pace` (config.transfer_timeout/transfer_min_rate)
        and holds one of the caller's address's slots until its answer has been sent.
        """
        who = client_key(request)
        if not slots.take(who):
            return PlainTextResponse(f"0\n{slots.busy_message()}\n", status_code=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        pace = Pace(config.transfer_timeout, config.transfer_min_rate)
        upload = UploadWrite.of(request.method, request.url.path, request.headers.get("content-type", ""), on_write)
        try:
            async with pace.bound():
                body = upload.tee(request.stream()) if upload else request.stream()
                resp = await upstream.stream(request.method, request.url.path, headers=headers,
                                             body=pace.count(body), query=request.url.query)
        except TimeoutError:
            slots.give(who)
            log.info("%s %.200s: body too slow (%d bytes in %.0fs); cut off", request.method,
                     request.url.path, pace.moved, pace.timeout)
            return PlainTextResponse("0\nThe request body arrived too slowly; sgcache stopped waiting.\n",
                                     status_code=408, headers={"connection": "close"})
        except UpstreamUnavailable as e:
            slots.give(who)
            return PlainTextResponse(f"0\n{e.message}\n", status_code=502)
        except Exception as e:  # a malformed request httpx will not send: still no 500
            slots.give(who)
            log.warning("could not pass %s %.200s through: %s", request.method, request.url.path,
                        type(e).__name__)
            return PlainTextResponse("0\nsgcache could not pass this request through.\n", status_code=400)
        finally:
            if request.method not in ("GET", "HEAD"):  # an upload may change what reads return
                coalescer.wrote_unknown()
        if upload is not None:  # an upload's short answer: written through before it is sent
            try:
                return await upload.finish(resp, lambda: slots.give(who))
            finally:
                coalescer.wrote_unknown()  # written through: no read joins one from before
        return RelayResponse(resp, pace, lambda: slots.give(who))

    async def browser_redirect(request: Request) -> Response:
        site = config.public_shotgun_url.rstrip("/")  # the browser never sees a proxy's user:password@
        url = site + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(url, status_code=302)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        try:
            async with monitor.running(), shadow.running(), browser.running(), \
                    (service.replicas.running() if service.replicas is not None else contextlib.nullcontext()):
                if lifespan is None:
                    yield
                else:
                    async with lifespan(app):
                        yield
        finally:
            await point_reads.aclose()
            coalescer.clock.close()

    routes = [
        Route("/api3/json", api3, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *monitor.routes(),
        *browser.routes(),  # /browse: the read-only web view (serve/browse)
        *outage_images.routes(),  # local image copies, handed out during an outage
        *(extra_routes or []),
        Route("/detail/{rest:path}", browser_redirect, methods=["GET"]),
        Route("/page/{rest:path}", browser_redirect, methods=["GET"]),
        Route("/{rest:path}", raw_proxy, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=app_lifespan)
    app.state.service = service
    app.state.metrics = metrics
    app.state.monitor = monitor
    app.state.shadow = shadow
    app.state.auth = verifier
    app.state.permissions = permissions
    app.state.browser = browser
    app.state.coalescer = coalescer
    app.state.fairness = fairness
    return app
