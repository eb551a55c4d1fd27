"""Thumbnails and filmstrips: the image fields, their transient state, and sharing.

The site stores an uploaded thumbnail as an Attachment and points the entity's
``image`` (or ``filmstrip_image``) at it. Until it has processed the upload it
answers a placeholder URL under ``/images/status/transient/`` instead, and
``share_thumbnail`` from such an entity answers ``2`` (the client raises
``ShotgunThumbnailNotReady``). Here processing takes ``delay`` seconds (0: ready at
once); ``settle()``, run before every request, swaps placeholders whose time has
come for the real path and logs that change, so a cache following the event log
sees the final URL too. Linked image fields (``entity.Shot.image``) are ordinary
deep reads of the same stored value.
"""

from __future__ import annotations

import time

from ..protocol import errors
from ..protocol.values import format_datetime, utcnow
from .auth import Actor
from .events import EventLog
from .query import Engine

TRANSIENT = "/images/status/transient/thumbnail_pending.png"
#: A 1x1 PNG served for the placeholder path.
PENDING_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
               b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
               b"\x00\x00\x00IEND\xaeB`\x82")
IMAGE_FIELDS = {"thumb_image": "image", "image": "image",
                "filmstrip_thumb_image": "filmstrip_image", "filmstrip_image": "filmstrip_image"}


def thumbnail_path(attachment_id: int) -> str:
    return f"/thumbnail/{attachment_id}"


class Thumbnails:
    def __init__(self, engine: Engine, events: EventLog) -> None:
        self.engine = engine
        self.store = engine.store
        self.events = events
        self.delay = 0.0  # seconds a new thumbnail stays "pending"

    @property
    def _pending(self) -> dict[tuple[str, int, str], tuple[float, str, Actor]]:
        """(type, id, field) -> (wall-clock time it is ready, final path, uploader); kept in
        the store's meta so a site reloaded from ``--state`` still finishes them."""
        return self.store.meta.setdefault("thumbnails_pending", {})

    def set(self, actor: Actor, etype: str, eid: int, field_name: str, path: str) -> None:
        """Point an entity's image field at a thumbnail (pending first when delay > 0).

        Runs inside the caller's store transaction."""
        if self.delay > 0:
            self._write(actor, etype, eid, field_name, TRANSIENT)
            self._pending[(etype, eid, field_name)] = (time.time() + self.delay, path, actor)
        else:
            self._pending.pop((etype, eid, field_name), None)
            self._write(actor, etype, eid, field_name, path)

    def settle(self) -> None:
        """Finish the processing of every thumbnail whose delay has passed (store lock held)."""
        if not self._pending:
            return
        now = time.time()
        store = self.store
        for key, (ready_at, path, actor) in list(self._pending.items()):
            if ready_at > now:
                continue
            del self._pending[key]
            etype, eid, field_name = key
            rec = store.get(etype, eid)
            if rec is None or rec.get(field_name) != TRANSIENT:  # cleared or replaced meanwhile
                continue
            with store.transaction():
                self._write(actor, etype, eid, field_name, path)

    def _write(self, actor: Actor, etype: str, eid: int, field_name: str, value: str) -> None:
        store = self.store
        rec = store.modify(etype, eid)
        old = rec.get(field_name)
        rec[field_name] = value
        if store.schema.get_field(etype, "updated_at"):
            rec["updated_at"] = format_datetime(utcnow())
        if store.schema.get_field(etype, "updated_by") and actor.user:
            rec["updated_by"] = dict(actor.user)
        absolute = self.engine.absolute
        self.events.change(actor, etype, eid, field_name, "image",
                                rec.get("project") if isinstance(rec.get("project"), dict) else None,
                                old=absolute(old) if isinstance(old, str) else old, new=absolute(value))

    # -- /upload/get_thumbnail_url (clients of sites older than 3.3) ---------------------------
    def url_of(self, etype: str, eid: str) -> str:
        """The two-line answer: ``1`` and the image's path, or ``0`` and why not."""
        rec = self.store.get_active(etype, int(eid)) if etype in self.store.schema and eid.isdigit() else None
        if rec is None:
            return f"0\nno such entity {etype} {eid}\n"
        path = rec.get("image")
        if not isinstance(path, str):
            return f"0\n{etype} {eid} has no thumbnail\n"
        return f"1\n{path}\n"

    # -- /upload/share_thumbnail -----------------------------------------------------------
    def share(self, actor: Actor, fields: dict[str, str]) -> str:
        """Point several entities at the source entity's thumbnail; the form reply text."""
        store = self.store
        filmstrip = fields.get("filmstrip_thumbnail") not in (None, "", "False", "0")
        field_name = "filmstrip_image" if filmstrip else "image"

        def ref(text: str) -> tuple[str, int]:
            etype, _, eid = text.rpartition("_")
            if etype not in store.schema or not eid.isdigit() or store.get_active(etype, int(eid)) is None:
                raise errors.crud("share_thumbnail", f"no such entity {text!r}")
            if not store.schema.get_field(etype, field_name):
                raise errors.unknown_field("share_thumbnail", etype, field_name)
            return etype, int(eid)

        src_type, src_id = ref(fields.get("source_entity", ""))
        path = store.tables[src_type][src_id].get(field_name)
        if path == TRANSIENT:
            return "2\nsource thumbnail is still being processed"
        if not isinstance(path, str) or not path.startswith("/thumbnail/"):
            raise errors.crud("share_thumbnail", f"{src_type} {src_id} has no {field_name} to share")
        targets = [ref(t) for t in fields.get("entities", "").split(",") if t]
        if not targets:
            raise errors.crud("share_thumbnail", "'entities' is empty")
        with store.transaction():
            for etype, eid in targets:
                self._pending.pop((etype, eid, field_name), None)
                self._write(actor, etype, eid, field_name, path)
        return f"1:{path.rsplit('/', 1)[1]}\n"
