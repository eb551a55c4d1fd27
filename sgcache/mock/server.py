"""HTTP for the mock site: the api3 JSON endpoint, file endpoints, and the admin port.

One ASGI app serves both listening sockets and routes on the local port, so the
admin endpoints (faults, stats, save) exist only on the loopback admin socket.
The outermost layer counts every request on the public port and applies the
transport faults before any handler runs; a dropped connection aborts the
socket without a response, which is what the client sees when a proxy dies.

Application errors are always HTTP 200 with ``{"exception": true, ...}``:
malformed JSON, wrong shapes and crashes in a handler become Faults, never 500s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..protocol import errors
from ..protocol.values import format_datetime, utcnow
from .faults import FaultConfig, Stats
from .site import Site

log = logging.getLogger("sgcache.mock")
JSON_TYPE = "application/json; charset=utf-8"
AUTH_KEYS = ("script_name", "script_key", "user_login", "user_password", "session_token",
             "sudo_as_login", "session_uuid", "auth_token")


def _json(body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False).encode("utf-8"), media_type=JSON_TYPE)


def _label(path: str, body: bytes) -> tuple[str, Any]:
    """Stats label of a request, and its parsed JSON payload when it is an RPC."""
    if path.endswith("/api3/json"):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return "invalid", None
        method = payload.get("method_name") if isinstance(payload, dict) else None
        return (method if isinstance(method, str) else "invalid"), payload
    if path.startswith("/upload/"):
        return "upload:" + path[len("/upload/"):], None
    if path.startswith("/file_serve/") or path.startswith("/thumbnail/"):
        return "download", None
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
            Route("/file_serve/attachment/{aid:int}", self.serve_file, methods=["GET"]),
            Route("/thumbnail/{aid:int}", self.serve_file, methods=["GET"]),
        ])
        self.admin = Starlette(routes=[
            Route("/faults", self.get_faults, methods=["GET"]),
            Route("/faults", self.set_faults, methods=["POST"]),
            Route("/stats", self.get_stats, methods=["GET"]),
            Route("/stats/reset", self.reset_stats, methods=["POST"]),
            Route("/save", self.save_state, methods=["POST"]),
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
                payload = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
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

    async def upload_file(self, request: Request) -> Response:
        fields, files = await self._form(request)
        upload = files.get("file")
        if upload is None:
            return PlainTextResponse("0\nno file part named 'file'")
        data = await upload.read()
        name = upload.filename or "upload"
        ctype = (upload.content_type if upload.content_type not in (None, "", "application/octet-stream")
                 else None) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return await run_in_threadpool(self._store_upload, fields, data, name, ctype, False)

    async def publish_thumbnail(self, request: Request) -> Response:
        fields, files = await self._form(request)
        upload = files.get("thumb_image")
        if upload is None:
            return PlainTextResponse("0\nno file part named 'thumb_image'")
        data = await upload.read()
        name = upload.filename or "thumbnail"
        ctype = mimetypes.guess_type(name)[0] or "image/jpeg"
        return await run_in_threadpool(self._store_upload, fields, data, name, ctype, True)

    def _store_upload(self, fields: dict[str, Any], data: bytes, name: str, ctype: str,
                      thumbnail: bool) -> Response:
        site = self.site
        store = site.store
        try:
            with store.lock:
                actor = self._actor(fields)
                etype = fields.get("entity_type")
                try:
                    eid = int(fields.get("entity_id", ""))
                except ValueError:
                    raise errors.crud("upload", f"bad entity_id {fields.get('entity_id')!r}")
                if etype not in store.schema:
                    raise errors.unknown_entity_type("upload", etype)
                target = store.get_active(etype, eid)
                if target is None:
                    raise errors.not_found("upload", etype, eid)
                field_name = "filmstrip_image" if thumbnail and fields.get("filmstrip") == "True" else (
                    "image" if thumbnail else fields.get("field_name"))
                fs = store.schema.get_field(etype, field_name) if field_name else None
                if field_name and fs is None:
                    raise errors.unknown_field("upload", etype, field_name)
                if fs is not None and fs.data_type != ("image" if thumbnail else "url"):
                    raise errors.crud("upload", f"Field '{field_name}' of '{etype}' cannot hold an upload.")
                display = fields.get("display_name") or name
                with store.transaction():
                    att_fields = [{"field_name": k, "value": v} for k, v in (
                        ("filename", name), ("display_name", display), ("file_size", len(data)),
                        ("file_extension", os.path.splitext(name)[1].lstrip(".") or None),
                        ("description", fields.get("description")),
                        ("tag_list", [t.strip() for t in fields.get("tag_list", "").split(",") if t.strip()]),
                        ("project", target.get("project") if isinstance(target.get("project"), dict) else None),
                    ) if store.schema.get_field("Attachment", k) and v is not None]
                    links = store.schema.get_field("Attachment", "attachment_links")
                    if links is not None and not thumbnail and (not links.valid_types or etype in links.valid_types):
                        att_fields.append({"field_name": "attachment_links", "value": [{"type": etype, "id": eid}]})
                    att = site.writer.create(actor, {"type": "Attachment", "fields": att_fields}, "upload")
                    aid = att["id"]
                    store.files[aid] = (ctype, name, data)
                    url = {"type": "Attachment", "id": aid, "name": display, "link_type": "upload",
                           "content_type": ctype, "url": f"/file_serve/attachment/{aid}"}
                    if store.schema.get_field("Attachment", "this_file"):
                        store.modify("Attachment", aid)["this_file"] = url
                    if thumbnail:
                        self._set_image(actor, etype, eid, field_name, f"/thumbnail/{aid}")
                    elif field_name:
                        site.writer.update(actor, {"type": etype, "id": eid, "fields": [
                            {"field_name": field_name, "value": url}]}, "upload")
        except errors.Fault as e:
            return PlainTextResponse(f"0\n{e.message}")
        return PlainTextResponse(f"1:{aid}\n")

    async def share_thumbnail(self, request: Request) -> Response:
        """Point several entities' image at the source entity's thumbnail."""
        fields, _files = await self._form(request)
        return await run_in_threadpool(self._share, fields)

    def _share(self, fields: dict[str, Any]) -> Response:
        store = self.site.store
        filmstrip = fields.get("filmstrip_thumbnail") not in (None, "", "False", "0")
        field_name = "filmstrip_image" if filmstrip else "image"

        def ref(text: str) -> tuple[str, int]:
            etype, _, eid = text.rpartition("_")
            if etype not in store.schema or not eid.isdigit() or store.get_active(etype, int(eid)) is None:
                raise errors.crud("share_thumbnail", f"no such entity {text!r}")
            return etype, int(eid)
        try:
            with store.lock:
                actor = self._actor(fields)
                src_type, src_id = ref(fields.get("source_entity", ""))
                path = store.tables[src_type][src_id].get(field_name)
                if not isinstance(path, str) or not path.startswith("/thumbnail/"):
                    return PlainTextResponse("2\nsource thumbnail not ready")
                targets = [ref(t) for t in fields.get("entities", "").split(",") if t]
                with store.transaction():
                    for etype, eid in targets:
                        if store.schema.get_field(etype, field_name):
                            self._set_image(actor, etype, eid, field_name, path)
        except errors.Fault as e:
            return PlainTextResponse(f"0\n{e.message}")
        return PlainTextResponse(f"1:{path.rsplit('/', 1)[1]}\n")

    def _set_image(self, actor: Any, etype: str, eid: int, field_name: str, path: str) -> None:
        store = self.site.store
        rec = store.modify(etype, eid)
        old = rec.get(field_name)
        rec[field_name] = path
        if store.schema.get_field(etype, "updated_at"):
            rec["updated_at"] = format_datetime(utcnow())
        if store.schema.get_field(etype, "updated_by") and actor.user:
            rec["updated_by"] = dict(actor.user)
        engine = self.site.engine
        self.site.events.change(actor, etype, eid, field_name, "image",
                                rec.get("project") if isinstance(rec.get("project"), dict) else None,
                                old=engine.absolute(old) if isinstance(old, str) else old,
                                new=engine.absolute(path))

    async def serve_file(self, request: Request) -> Response:
        aid = request.path_params["aid"]
        with self.site.store.lock:
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

    async def save_state(self, request: Request) -> Response:
        if self.save is None:
            return JSONResponse({"error": "no --state file configured"}, status_code=400)
        path = await run_in_threadpool(self.save)
        return JSONResponse({"saved": path})
