"""`note_thread_read` (RPC `note_thread_contents`): a Note, its Replies and its Attachments.

Shapes as the client's docstring shows the site's answer: default keys per type
(Note: content, created_at, created_by; Reply: content, created_at, user, the user
carrying its ``image``; Attachment: created_at, created_by), ``created_at`` as
``YYYY-MM-DD HH:MM:SS UTC``, the default user links with ``status`` and ``valid``.
``entity_fields`` adds fields per type, rendered as ``read`` renders them. Order: the
Note first, then Replies and Attachments by creation time (id breaks ties), which is
the order the python-api tests expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import errors
from .query import Engine

M = "note_thread_contents"
DEFAULTS = {"Note": ("content", "created_at", "created_by"),
            "Reply": ("content", "created_at", "user"),
            "Attachment": ("created_at", "created_by")}


def stamp(wire: Any) -> Any:
    """'2015-07-14T21:33:28Z' -> '2015-07-14 21:33:28 UTC' (the thread and stream format)."""
    if isinstance(wire, str) and len(wire) == 20 and wire.endswith("Z"):
        return f"{wire[:10]} {wire[11:19]} UTC"
    return wire


def user_link(engine: Engine, link: Any, with_image: bool = False) -> dict[str, Any] | None:
    """A user as threads and streams show it: name, status, valid (and image)."""
    if not isinstance(link, dict) or not engine.live(link):
        return None
    rec = engine.store.get(link["type"], link["id"]) or {}
    out = {"type": link["type"], "id": link["id"], "name": engine.name_of(link["type"], link["id"]),
           "status": rec.get("sg_status_list"), "valid": "valid"}
    if with_image:
        img = rec.get("image")
        out["image"] = engine.absolute(img) if isinstance(img, str) else None
    return out


def _creation_order(engine: Engine, keys: set[tuple[str, int]], since: str) -> dict[tuple[str, int], int]:
    """The ids of the events that created these records: creation order within one second.

    Walks the log from the newest event back to `since` (created_at only grows with id)."""
    store = engine.store
    out: dict[tuple[str, int], int] = {}
    if not keys or "EventLogEntry" not in store.schema:
        return out
    events = store.tables["EventLogEntry"]
    for ev_id in reversed(store.ids("EventLogEntry")):
        ev = events[ev_id]
        if (ev.get("created_at") or "") < since or len(out) == len(keys):
            break
        meta = ev.get("meta")
        if isinstance(meta, dict) and meta.get("type") == "new_entity":
            key = (meta.get("entity_type"), meta.get("entity_id"))
            if key in keys:
                out[key] = ev_id  # type: ignore[index]
    return out


def note_thread(engine: Engine, params: Any) -> list[dict[str, Any]]:
    if not isinstance(params, dict):
        raise errors.crud(M, "parameters must be an object")
    note_id = params.get("note_id")
    if not isinstance(note_id, int) or isinstance(note_id, bool):
        raise errors.crud(M, f"'note_id' must be a Note id, got {note_id!r}")
    extra = params.get("entity_fields") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
        raise errors.crud(M, "'entity_fields' must be an object of type -> list of fields")
    store = engine.store
    note = store.get_active("Note", note_id)
    if note is None:
        raise errors.not_found(M, "Note", note_id)
    renderers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        t: engine.renderer(t, [f for f in extra.get(t, []) if f not in DEFAULTS[t]], M)
        for t in DEFAULTS if t in store.schema}

    def item(etype: str, rec: dict[str, Any]) -> dict[str, Any]:
        out = renderers[etype](rec)
        for f in DEFAULTS[etype]:
            if f == "created_at":
                out[f] = stamp(rec.get(f))
            elif f in ("created_by", "user"):
                out[f] = user_link(engine, rec.get(f) or rec.get("created_by"), with_image=f == "user")
            else:
                out[f] = rec.get(f)
        return out

    rest: list[tuple[str, int, str, dict[str, Any]]] = []
    for etype, field_name in (("Reply", "replies"), ("Attachment", "attachments")):
        if etype not in store.schema:
            continue
        for link in engine.links(note.get(field_name)):
            if link["type"] == etype:
                rec = store.tables[etype][link["id"]]
                rest.append((rec.get("created_at") or "", rec["id"], etype, rec))
    if "Reply" in store.schema:  # replies linked from their side only
        seen = {(t, i) for _, i, t, _ in rest}
        for i in store.ids("Reply"):
            rec = store.tables["Reply"][i]
            link = rec.get("entity")
            if isinstance(link, dict) and link.get("type") == "Note" and link.get("id") == note_id \
                    and ("Reply", i) not in seen:
                rest.append((rec.get("created_at") or "", i, "Reply", rec))
    order = _creation_order(engine, {(t, i) for _, i, t, _ in rest}, min((c for c, *_ in rest), default=""))
    rest.sort(key=lambda t: (t[0], order.get((t[2], t[1]), 0), t[1]))
    return [item("Note", note)] + [item(t, rec) for _, _, t, rec in rest]
