"""Uploads: through the site (``/upload/upload_file``, ``/upload/publish_thumbnail``) and
direct to storage, the presigned-URL flow the client takes when ``info`` reports
``s3_direct_uploads_enabled`` and lists the type and field in ``s3_enabled_upload_types``.

Direct to storage, as the client drives it:

1. ``/upload/api_get_upload_link_info`` (``upload_type`` Thumbnail|Attachment,
   ``filename``, ``multipart_upload``) answers ``1\\n<url>\\n<timestamp>\\n<type>\\n<id>``;
2. the bytes are PUT to ``<url>`` (``/storage/<id>?X-Amz-Signature=…`` on this site),
   or in parts: ``api_get_upload_link_for_part`` gives each part's URL, each PUT
   answers an ``ETag``, and ``api_complete_multipart_upload`` checks the ETags;
3. ``/upload/api_link_file`` with the step-1 text creates the Attachment and sets the
   entity's field, exactly as an upload through the site does.

The storage URL carries no credentials, only an HMAC of the upload id, as a presigned
URL does; a wrong signature is S3's 403 ``SignatureDoesNotMatch``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import mimetypes
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import errors
from ..protocol.values import format_datetime
from .auth import Actor
from .thumbnails import IMAGE_FIELDS, Thumbnails, thumbnail_path
from .writes import Writer

#: What a site with direct uploads typically reports (the client's docstring example).
DEFAULT_S3_TYPES: dict[str, Any] = {"Version": ["sg_uploaded_movie"], "Attachment": "*", "*": ["this_file"]}
SLOT_TTL = 3600.0


@dataclass
class Slot:
    """One direct-to-storage upload between step 1 and api_link_file."""

    upload_type: str
    filename: str
    timestamp: str
    multipart: bool
    created: float = field(default_factory=time.monotonic)
    data: bytes | None = None
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    content_type: str | None = None


def _when(text: Any) -> dt.datetime | None:
    """The `created_at` form field: ISO (upload_file, link info) or str(datetime) (api_link_file);
    a naive time is taken as UTC. Malformed: the server's own time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


class Uploads:
    def __init__(self, writer: Writer, thumbnails: Thumbnails, base_url: Callable[[], str]) -> None:
        self.writer = writer
        self.store = writer.store
        self.thumbnails = thumbnails
        self.base_url = base_url
        self.s3_direct = False  # the client then uploads through /upload/upload_file
        self.s3_types: dict[str, Any] = dict(DEFAULT_S3_TYPES)
        self._key = secrets.token_bytes(32)
        self._slots: dict[str, Slot] = {}

    # -- the Attachment and the entity's field --------------------------------------------
    def store_file(self, actor: Actor, fields: dict[str, str], data: bytes, name: str, ctype: str,
                   thumbnail: bool) -> int:
        """Create the Attachment for uploaded bytes and set the target field (store lock held)."""
        store = self.store
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
        if not data:
            raise errors.crud("upload", "the uploaded file is empty")
        if thumbnail:
            field_name: str | None = "filmstrip_image" if fields.get("filmstrip") == "True" else "image"
        else:
            field_name = fields.get("field_name") or None
            if field_name in IMAGE_FIELDS:
                raise errors.crud("upload", f"Field '{field_name}' takes thumbnails: use publish_thumbnail")
        fs = store.schema.get_field(etype, field_name) if field_name else None
        if field_name and fs is None:
            raise errors.unknown_field("upload", etype, field_name)
        if fs is not None and fs.data_type != ("image" if thumbnail else "url"):
            raise errors.crud("upload", f"Field '{field_name}' of '{etype}' cannot hold an upload.")
        display = fields.get("display_name") or name
        created_at = _when(fields.get("created_at"))
        project = target.get("project") if isinstance(target.get("project"), dict) else None
        with store.transaction():
            att_fields = [{"field_name": k, "value": v} for k, v in (
                ("filename", name), ("display_name", display), ("file_size", len(data)),
                ("file_extension", os.path.splitext(name)[1].lstrip(".") or None),
                ("description", fields.get("description")),
                ("tag_list", [t.strip() for t in fields.get("tag_list", "").split(",") if t.strip()]),
                ("project", project),
                ("created_at", format_datetime(created_at) if created_at else None),
            ) if store.schema.get_field("Attachment", k) and v is not None]
            links = store.schema.get_field("Attachment", "attachment_links")
            linked = links is not None and not thumbnail and (not links.valid_types or etype in links.valid_types)
            if linked:
                att_fields.append({"field_name": "attachment_links", "value": [{"type": etype, "id": eid}]})
            att = self.writer.create(actor, {"type": "Attachment", "fields": att_fields}, "upload")
            aid = att["id"]
            store.files[aid] = (ctype, name, data)
            url = {"type": "Attachment", "id": aid, "name": display, "link_type": "upload",
                   "content_type": ctype, "url": f"/file_serve/attachment/{aid}"}
            if store.schema.get_field("Attachment", "this_file"):
                store.modify("Attachment", aid)["this_file"] = url
            own = store.schema.get_field(etype, "attachments")
            if not thumbnail and not linked and own is not None and own.is_multi and (
                    not own.valid_types or "Attachment" in own.valid_types):
                # e.g. a file uploaded to a Note joins its thread
                self.writer.update(actor, {"type": etype, "id": eid, "fields": [
                    {"field_name": "attachments", "value": [{"type": "Attachment", "id": aid}],
                     "multi_entity_update_mode": "add"}]}, "upload")
            if thumbnail:
                assert field_name is not None
                self.thumbnails.set(actor, etype, eid, field_name, thumbnail_path(aid))
            elif field_name:
                self.writer.update(actor, {"type": etype, "id": eid, "fields": [
                    {"field_name": field_name, "value": url}]}, "upload")
        return aid

    # -- direct to storage ---------------------------------------------------------------
    def _sign(self, upload_id: str, part: int | None) -> str:
        msg = f"{upload_id}:{part or 0}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def _url(self, upload_id: str, part: int | None = None) -> str:
        path = f"/storage/{upload_id}" + (f"/{part}" if part else "")
        return f"{self.base_url()}{path}?X-Amz-Expires=900&X-Amz-Signature={self._sign(upload_id, part)}"

    def _expire(self) -> None:
        old = time.monotonic() - SLOT_TTL
        for k in [k for k, s in self._slots.items() if s.created < old]:
            del self._slots[k]

    def _slot(self, fields: dict[str, str]) -> tuple[str, Slot]:
        upload_id = fields.get("upload_id", "")
        slot = self._slots.get(upload_id)
        if slot is None or slot.timestamp != fields.get("timestamp"):
            raise errors.crud("upload", "unknown or expired upload")
        return upload_id, slot

    def link_info(self, fields: dict[str, str]) -> str:
        """Step 1: a presigned URL for one upload (the reply's lines are the client's contract)."""
        upload_type = fields.get("upload_type")
        if upload_type not in ("Thumbnail", "Attachment"):
            raise errors.crud("upload", f"bad upload_type {upload_type!r}")
        filename = fields.get("filename") or ""
        if not filename:
            raise errors.crud("upload", "'filename' missing")
        self._expire()
        upload_id = secrets.token_hex(16)
        timestamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        multipart = fields.get("multipart_upload") == "True"
        self._slots[upload_id] = Slot(upload_type, filename, timestamp, multipart)
        return f"1\n{'' if multipart else self._url(upload_id)}\n{timestamp}\n{upload_type}\n{upload_id}\n"

    def part_link(self, fields: dict[str, str]) -> str:
        upload_id, slot = self._slot(fields)
        try:
            part = int(fields.get("part_number", ""))
        except ValueError:
            part = 0
        if not slot.multipart or part < 1 or part > 10000:
            raise errors.crud("upload", f"bad part_number {fields.get('part_number')!r}")
        return f"1\n{self._url(upload_id, part)}\n"

    def put(self, upload_id: str, part: int | None, signature: str, data: bytes,
            content_type: str | None) -> tuple[int, str, dict[str, str]]:
        """A PUT to storage: (status, body, headers), as S3 answers."""
        slot = self._slots.get(upload_id)
        if slot is None or not hmac.compare_digest(signature, self._sign(upload_id, part)) \
                or (part is not None) != slot.multipart:
            return 403, ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code>"
                         "<Message>The request signature we calculated does not match the signature you "
                         "provided.</Message></Error>"), {"content-type": "application/xml"}
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        if part is None:
            slot.data = data
        else:
            slot.parts[part] = (etag, data)
        slot.content_type = content_type
        return 200, "", {"ETag": etag}

    def complete(self, fields: dict[str, str]) -> str:
        _upload_id, slot = self._slot(fields)
        etags = [e for e in fields.get("etags", "").split(",") if e]
        parts = [slot.parts.get(n) for n in range(1, len(etags) + 1)]
        if not etags or any(p is None for p in parts) or [p[0] for p in parts if p] != etags \
                or len(parts) != len(slot.parts):
            raise errors.crud("upload", "the ETags do not match the uploaded parts")
        slot.data = b"".join(p[1] for p in parts if p)
        return "1\n"

    def link_file(self, actor: Actor, fields: dict[str, str]) -> int:
        """Step 3: the Attachment for a completed storage upload (store lock held)."""
        lines = fields.get("upload_link_info", "").split("\n")
        upload_id = lines[4] if len(lines) > 4 else ""
        slot = self._slots.get(upload_id)
        if slot is None or slot.data is None:
            raise errors.crud("upload", "nothing was uploaded for this link")
        thumbnail = slot.upload_type == "Thumbnail"
        ctype = (slot.content_type if slot.content_type not in (None, "", "application/octet-stream") else None) \
            or mimetypes.guess_type(slot.filename)[0] or ("image/jpeg" if thumbnail else "application/octet-stream")
        aid = self.store_file(actor, fields, slot.data, slot.filename, ctype, thumbnail)
        del self._slots[upload_id]
        return aid

    def info(self) -> dict[str, Any]:
        return {"s3_direct_uploads_enabled": self.s3_direct, "s3_enabled_upload_types": self.s3_types}
