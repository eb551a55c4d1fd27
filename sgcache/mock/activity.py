"""`activity_stream_read` (RPC `activity_stream`): what happened to an entity, newest first.

Read off the mock's own event log, so it is exactly as complete as the log (a script
with event generation off leaves no activity, as on the site). An entity's stream holds
its creation, changes of its status field, and the creation of Notes linking it
(``note_links``) and of Versions and PublishedFiles whose ``entity`` it is. Update ids
are the event ids, so ``min_id``/``max_id`` page through it (both inclusive);
``limit`` defaults to 25. Shapes follow the client's docstring: ``created_at`` as
``YYYY-MM-DD HH:MM:SS UTC``, ``created_by`` with name, status and image,
``primary_entity`` with name and status plus the requested ``entity_fields``.
"""

from __future__ import annotations

from typing import Any

from ..protocol import errors
from .notes import stamp, user_link
from .query import Engine

M = "activity_stream"
DEFAULT_LIMIT = 25
#: type -> the field through which its creation shows in another entity's stream
CHILD_LINKS = {"Note": "note_links", "Version": "entity", "PublishedFile": "entity"}
STATUS_FIELDS = ("sg_status_list", "sg_status")


def _int_or_none(params: dict[str, Any], key: str) -> int | None:
    v = params.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
        raise errors.crud(M, f"'{key}' must be an integer or null, got {v!r}")
    return v


def activity_stream(engine: Engine, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise errors.crud(M, "parameters must be an object")
    etype, eid = params.get("type"), params.get("id")
    store = engine.store
    if not isinstance(etype, str) or etype not in store.schema:
        raise errors.unknown_entity_type(M, etype)
    if not isinstance(eid, int) or store.get_active(etype, eid) is None:
        raise errors.not_found(M, etype, eid)
    min_id, max_id = _int_or_none(params, "min_id"), _int_or_none(params, "max_id")
    limit = _int_or_none(params, "limit") or DEFAULT_LIMIT
    extra = params.get("entity_fields") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
        raise errors.crud(M, "'entity_fields' must be an object of type -> list of fields")
    me = (etype, eid)
    updates: list[dict[str, Any]] = []
    events = store.tables.get("EventLogEntry", {})
    hidden = store.visible_hidden_events() if store.hidden_events else set()
    for ev_id in reversed(store.ids("EventLogEntry")):
        if len(updates) >= limit:
            break
        if (max_id is not None and ev_id > max_id) or ev_id in hidden:
            continue
        if min_id is not None and ev_id < min_id:
            break
        ev = events[ev_id]
        meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
        kind = meta.get("type")
        subject = (meta.get("entity_type"), meta.get("entity_id"))
        if kind == "new_entity" and str(ev.get("event_type", "")).endswith("_New"):
            if subject != me and not _links_to(engine, subject, me):
                continue
            update_type = "create"
        elif kind == "attribute_change" and subject == me and meta.get("attribute_name") in STATUS_FIELDS \
                and not meta.get("in_create"):
            update_type = "update"
        else:
            continue
        primary = _primary(engine, subject, extra)
        if primary is None:  # retired since
            continue
        updates.append({"id": ev_id, "update_type": update_type, "meta": meta,
                        "created_at": stamp(ev.get("created_at")),
                        "created_by": _creator(engine, ev.get("user")),
                        "primary_entity": primary, "read": False})
    ids = [u["id"] for u in updates]
    return {"entity_type": etype, "entity_id": eid, "updates": updates,
            "earliest_update_id": min(ids) if ids else None, "latest_update_id": max(ids) if ids else None}


def _links_to(engine: Engine, subject: tuple[Any, Any], me: tuple[str, int]) -> bool:
    field_name = CHILD_LINKS.get(subject[0])
    rec = engine.store.get_active(subject[0], subject[1]) if field_name else None
    if rec is None:
        return False
    return any((l["type"], l["id"]) == me for l in engine.links(rec.get(field_name)))


def _primary(engine: Engine, subject: tuple[Any, Any], extra: dict[str, Any]) -> dict[str, Any] | None:
    etype, eid = subject
    rec = engine.store.get_active(etype, eid) if isinstance(etype, str) else None
    if rec is None:
        return None
    wanted = [f for f in extra.get(etype, []) if f not in ("id", "type", "name", "status")]
    out = engine.renderer(etype, wanted, M)(rec)
    out["name"] = engine.name_of(etype, eid)
    out["status"] = next((rec.get(f) for f in STATUS_FIELDS if f in rec), None)
    return out


def _creator(engine: Engine, link: Any) -> dict[str, Any] | None:
    out = user_link(engine, link, with_image=True)
    if out is not None:
        out.pop("valid", None)
    return out
