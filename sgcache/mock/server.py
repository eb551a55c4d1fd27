"""HTTP for the mock site: the api3 JSON endpoint, file endpoints, and the admin port.

One ASGI app serves both listening sockets and routes on the local port, so the
admin endpoints (faults, stats, save) exist only on the loopback admin socket.
The outermost layer counts every request on the public port and applies the
transport faults before any handler runs; a dropped connection aborts the
socket without a response, which is what the client sees when a proxy dies.

Concurrency: requests are handled concurrently. The injected latency is awaited on the
event loop (it holds nothing), and the RPC itself runs in the thread pool under the
site's store lock (`Site.call`): the site's data is single-threaded, so RPCs are atomic
and run one at a time, while any number of requests wait out their latency together,
as against a hosted site.

Application errors are always HTTP 200 with ``{"exception": true, ...}``:
malformed JSON, wrong shapes and crashes in a handler become Faults, never 500s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..protocol import errors, jsoncodec
from .faults import FaultConfig, Stats
from .site import Site
from .thumbnails import PENDING_PNG, TRANSIENT

log = logging.getLogger("sgcache.mock")
JSON_TYPE = "application/json; charset=utf-8"
AUTH_KEYS = ("script_name", "script_key", "user_login", "user_password", "session_token",
             "sudo_as_login", "session_uuid", "auth_token")


def _json(body: Any) -> Response:
    """The wire's encoder (orjson where exact): a page of 500 entities is encoded in a
    fraction of the standard library's time. Exact because the site's values are finite:
    bodies with NaN or Infinity are refused as invalid JSON (`_parse`), as the site does."""
    return Response(jsoncodec.dumps(body), media_type=JSON_TYPE)


def _parse(body: bytes) -> Any:
    """A request body's JSON. NaN and Infinity are not JSON: the site refuses them."""
    return jsoncodec.loads(body, allow_constants=False)


def _label(path: str, body: bytes) -> tuple[str, Any]:
    """Stats label of a request, and its parsed JSON payload when it is an RPC."""
    if path.endswith("/api3/json"):
        try:
            payload = _parse(body)
        except (ValueError, RecursionError):
            return "invalid", None
        method = payload.get("method_name") if isinstance(payload, dict) else None
        return (method if isinstance(method, str) else "invalid"), payload
    if path.startswith("/upload/"):
        return "upload:" + path[len("/upload/"):], None
    if path.startswith(("/file_serve/", "/thumbnail/", "/images/")):
        return "download", None
    if path.startswith("/storage/"):
        return "storage", None
    return path, None


class MockServer:
    """Builds the ASGI app around a Site."""

    def __init__(self, site: Site, faults: FaultConfig | None = None, stats: Stats | None = None,
                 admin_port: int | None = None, save: Callable[[], str | None] | None = None) -> None:
        self.site = site
        self.faults = faults or FaultConfig(commit=site.events.faults)
        self.stats = stats or Stats()
        self.admin_port = admin_port
        self.save = save
        self.public = Starlette(routes=[
            Route("/api3/json", self.api3, methods=["POST"]),
            Route("/{prefix:path}/api3/json", self.api3, methods=["POST"]),
            Route("/upload/upload_file", self.upload_file, methods=["POST"]),
            Route("/upload/publish_thumbnail", self.publish_thumbnail, methods=["POST"]),
            Route("/upload/share_thumbnail", self.share_thumbnail, methods=["POST"]),
            Route("/upload/get_thumbnail_url", self.thumbnail_url, methods=["GET"]),
            Route("/upload/api_get_upload_link_info", self.upload_link_info, methods=["POST"]),
            Route("/upload/api_get_upload_link_for_part", self.upload_part_link, methods=["POST"]),
            Route("/upload/api_complete_multipart_upload", self.complete_multipart, methods=["POST"]),
            Route("/upload/api_link_file", self.link_file, methods=["POST"]),
            Route("/storage/{upload_id}", self.storage_put, methods=["PUT"]),
            Route("/storage/{upload_id}/{part:int}", self.storage_put, methods=["PUT"]),
            Route(TRANSIENT, self.transient_image, methods=["GET"]),
            Route("/file_serve/attachment/{aid:int}", self.serve_file, methods=["GET"]),
            Route("/thumbnail/{aid:int}", self.serve_file, methods=["GET"]),
            Route("/thumbnail/{etype}/{name}", self.demo_image, methods=["GET"]),
        ])
        self.admin = Starlette(routes=[
            Route("/faults", self.get_faults, methods=["GET"]),
            Route("/faults", self.set_faults, methods=["POST"]),
            Route("/stats", self.get_stats, methods=["GET"]),
            Route("/stats/reset", self.reset_stats, methods=["POST"]),
            Route("/save", self.save_state, methods=["POST"]),
            Route("/settings", self.get_settings, methods=["GET"]),
            Route("/settings", self.set_settings, methods=["POST"]),
            Route("/health", lambda r: JSONResponse({"ok": True}), methods=["GET"]),
        ])

    # -- the ASGI entry point ------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                msg = await receive()
                while msg["type"] != "lifespan.shutdown":
                    await send({"type": msg["type"] + ".complete"})
                    msg = await receive()
                await send({"type": "lifespan.shutdown.complete"})
            return
        server = scope.get("server") or (None, None)
        if self.admin_port is not None and server[1] == self.admin_port:
            await self.admin(scope, receive, send)
            return
        await self._public(scope, receive, send)

    async def _public(self, scope: dict, receive: Callable, send: Callable) -> None:
        body = b""
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        label, payload = _label(scope.get("path", ""), body)
        self.stats.count(label)
        f = self.faults
        if f.latency:
            await asyncio.sleep(f.latency)
        action = f.pick()
        if action == "drop":
            self.stats.inject("drop")
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                transport.abort()
                return
            action = 502
        if action is not None:
            self.stats.inject(str(action))
            await PlainTextResponse(f"mock site: injected HTTP {action}", status_code=int(action))(
                scope, receive, send)
            return
        scope["sgcache.payload"] = payload
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.public(scope, replay, send)

    # -- RPC ------------------------------------------------------------------------------------
    async def api3(self, request: Request) -> Response:
        payload = request.scope.get("sgcache.payload")
        if payload is None:
            try:
                payload = _parse(await request.body())
            except (ValueError, RecursionError):
                return _json(errors.Fault("Invalid JSON in request body.").body())
        return await run_in_threadpool(self._rpc, payload)

    def _rpc(self, payload: Any) -> Response:
        try:
            if not isinstance(payload, dict):
                raise errors.Fault("Request body must be a JSON object with 'method_name' and 'params'.")
            method = payload.get("method_name")
            params = payload.get("params", [])
            result = self.site.call(method, params)
            body = result if method == "info" else {"results": result}
        except errors.Fault as e:
            body = e.body()
        except Exception as e:  # never a 500: the client would not retry sensibly
            log.exception("mock site: internal error")
            body = errors.error_body(f"Internal error in the mock site: {type(e).__name__}: {e}")
        return _json(body)

    # -- files ----------------------------------------------------------------------------------
    async def _form(self, request: Request) -> tuple[dict[str, Any], Any]:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        files = {k: v for k, v in form.items() if not isinstance(v, str)}
        return fields, files

    def _actor(self, fields: dict[str, Any]) -> Any:
        auth = {k: fields[k] for k in AUTH_KEYS if k in fields}
        return self.site.auth.authenticate(auth, "upload")

    def _form_call(self, fields: dict[str, Any], run: Callable[[Any], str]) -> Response:
        """Authenticate a form post and run it under the store lock; Faults become `0\n<message>`."""
        try:
            with self.site.store.lock:
                actor = self._actor(fields)
                self.site.thumbnails.settle()
                return PlainTextResponse(run(actor))
        except errors.Fault as e:
            return PlainTextResponse(f"0\n{e.message}")

    def _stored(self, actor: Any, fields: dict[str, Any], data: bytes, name: str, ctype: str,
                thumbnail: bool) -> str:
        return f"1:{self.site.uploads.store_file(actor, fields, data, name, ctype, thumbnail)}\n"

    async def upload_file(self, request: Request) -> Response:
        fields, files = await self._form(request)
        upload = files.get("file")
        if upload is None:
            return PlainTextResponse("0\nno file part named 'file'")
        data = await upload.read()
        name = upload.filename or "upload"
        ctype = (upload.content_type if upload.content_type not in (None, "", "application/octet-stream")
                 else None) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return await run_in_threadpool(self._form_call, fields, lambda actor: self._stored(
            actor, fields, data, name, ctype, False))

    async def publish_thumbnail(self, request: Request) -> Response:
        fields, files = await self._form(request)
        upload = files.get("thumb_image")
        if upload is None:
            return PlainTextResponse("0\nno file part named 'thumb_image'")
        data = await upload.read()
        name = upload.filename or "thumbnail"
        ctype = mimetypes.guess_type(name)[0] or "image/jpeg"
        return await run_in_threadpool(self._form_call, fields, lambda actor: self._stored(
            actor, fields, data, name, ctype, True))

    async def share_thumbnail(self, request: Request) -> Response:
        """Point several entities' image at the source entity's thumbnail."""
        fields, _files = await self._form(request)
        return await run_in_threadpool(self._form_call, fields, lambda actor: self.site.thumbnails.share(actor, fields))

    # -- direct-to-storage uploads (mock/uploads.py) ---------------------------------------
    async def upload_link_info(self, request: Request) -> Response:
        fields, _ = await self._form(request)
        return await run_in_threadpool(self._form_call, fields, lambda actor: self.site.uploads.link_info(fields))

    async def upload_part_link(self, request: Request) -> Response:
        fields, _ = await self._form(request)
        return await run_in_threadpool(self._form_call, fields, lambda actor: self.site.uploads.part_link(fields))

    async def complete_multipart(self, request: Request) -> Response:
        fields, _ = await self._form(request)
        return await run_in_threadpool(self._form_call, fields, lambda actor: self.site.uploads.complete(fields))

    async def link_file(self, request: Request) -> Response:
        fields, _ = await self._form(request)
        return await run_in_threadpool(self._form_call, fields, lambda actor: f"1:{self.site.uploads.link_file(actor, fields)}\n")

    async def storage_put(self, request: Request) -> Response:
        """The storage service a presigned URL points at (no site credentials)."""
        data = await request.body()
        part = request.path_params.get("part")
        with self.site.store.lock:
            status, body, headers = self.site.uploads.put(
                request.path_params["upload_id"], part, request.query_params.get("X-Amz-Signature", ""),
                data, request.headers.get("content-type"))
        return Response(body, status_code=status, headers=headers)

    async def thumbnail_url(self, request: Request) -> Response:
        q = request.query_params
        with self.site.store.lock:
            self.site.thumbnails.settle()
            return PlainTextResponse(self.site.thumbnails.url_of(q.get("entity_type", ""), q.get("entity_id", "")))

    async def transient_image(self, request: Request) -> Response:
        return Response(PENDING_PNG, media_type="image/png")

    async def demo_image(self, request: Request) -> Response:
        """The generated demo site's images (`/thumbnail/Shot/12.png`): one small image."""
        etype, name = request.path_params["etype"], request.path_params["name"]
        stem, _, ext = name.partition(".")
        if etype not in self.site.store.schema or not stem.isdigit() or ext != "png":
            return PlainTextResponse("File not found", status_code=404)
        return Response(PENDING_PNG, media_type="image/png")

    async def serve_file(self, request: Request) -> Response:
        aid = request.path_params["aid"]
        with self.site.store.lock:
            self.site.thumbnails.settle()
            entry = self.site.store.files.get(aid)
        if entry is None:
            return PlainTextResponse("File not found", status_code=404)
        ctype, name, data = entry
        return Response(data, media_type=ctype,
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    # -- admin ----------------------------------------------------------------------------------
    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.to_json())

    async def set_faults(self, request: Request) -> Response:
        try:
            self.faults.update(json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse(self.faults.to_json())

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.to_json())

    async def reset_stats(self, request: Request) -> Response:
        self.stats.reset()
        return JSONResponse(self.stats.to_json())

    def _settings(self) -> dict[str, Any]:
        up = self.site.uploads
        return {"thumbnail_delay": self.site.thumbnails.delay, "s3_direct_uploads_enabled": up.s3_direct,
                "s3_enabled_upload_types": up.s3_types}

    async def get_settings(self, request: Request) -> Response:
        return JSONResponse(self._settings())

    async def set_settings(self, request: Request) -> Response:
        """Site behaviour tests switch at run time: thumbnail processing time, direct uploads."""
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict) or set(body) - set(self._settings()):
                raise ValueError(f"settings are {sorted(self._settings())}")
            delay = body.get("thumbnail_delay", self.site.thumbnails.delay)
            direct = body.get("s3_direct_uploads_enabled", self.site.uploads.s3_direct)
            types = body.get("s3_enabled_upload_types", self.site.uploads.s3_types)
            if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0 \
                    or not isinstance(direct, bool) or not isinstance(types, dict):
                raise ValueError("thumbnail_delay >= 0, s3_direct_uploads_enabled bool, "
                                 "s3_enabled_upload_types an object")
        except (ValueError, TypeError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        with self.site.store.lock:
            self.site.thumbnails.delay = float(delay)
            self.site.uploads.s3_direct = direct
            self.site.uploads.s3_types = types
        return JSONResponse(self._settings())

    async def save_state(self, request: Request) -> Response:
        if self.save is None:
            return JSONResponse({"error": "no --state file configured"}, status_code=400)
        path = await run_in_threadpool(self.save)
        return JSONResponse({"saved": path})
