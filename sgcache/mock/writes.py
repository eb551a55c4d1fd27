"""create / update / delete / revive: validation, stored values, inverse links, events.

Each public method runs inside one store transaction, so the record change, the
inverse-field changes and their EventLogEntry rows commit (or roll back) together.
The server owns created_at/updated_at/created_by/updated_by.
"""

from __future__ import annotations

from typing import Any

from ..protocol import errors
from ..protocol.values import format_datetime, utcnow
from ..schema import FieldSchema
from .auth import Actor, hash_secret
from .events import EventLog, retirement_stamp
from .filters import check_scalar
from .query import MULTI, UNREADABLE, Engine, empty_value
from .store import Store

#: Fields the server maintains; a create may still set them (imports do).
AUTO_FIELDS = ("created_at", "updated_at", "created_by", "updated_by")
MODES = ("set", "add", "remove")


def _key(link: dict[str, Any]) -> tuple[str, int]:
    return (link["type"], link["id"])


class Writer:
    def __init__(self, store: Store, engine: Engine, events: EventLog,
                 inverse: dict[tuple[str, str, str], str] | None = None) -> None:
        self.store = store
        self.engine = engine
        self.events = events
        self.inverse = inverse or {}

    # -- values ------------------------------------------------------------------
    def coerce(self, method: str, etype: str, fs: FieldSchema, value: Any) -> Any:
        """Validate a written value and return what is stored."""
        dt, name = fs.data_type, fs.name
        if name in ("id", "type") or dt in UNREADABLE:
            raise errors.not_editable(method, etype, name)
        if value is None:
            if dt == "checkbox":
                return False
            return empty_value(dt)
        if dt == "entity":
            return self._link(method, etype, fs, value)
        if dt in MULTI:
            if not isinstance(value, list):
                raise errors.bad_value(method, name, dt, value)
            out: dict[tuple[str, int], dict[str, Any]] = {}
            for v in value:
                link = self._link(method, etype, fs, v)
                out.setdefault(_key(link), link)
            return list(out.values())
        if dt == "tag_list":
            if not isinstance(value, list):
                raise errors.bad_value(method, name, dt, value)
            tags = []
            for t in value:
                t = t.get("name") if isinstance(t, dict) else t
                if not isinstance(t, str):
                    raise errors.bad_value(method, name, dt, value)
                if t not in tags:
                    tags.append(t)
            return tags
        if dt == "image":
            raise errors.crud(method, f"Field '{name}' of type 'image' can only be set to null; "
                                      f"upload a thumbnail instead.")
        if dt == "url":
            if not isinstance(value, dict):
                raise errors.bad_value(method, name, dt, value)
            v = dict(value)
            if "link_type" not in v:
                v["link_type"] = "local" if ("local_path" in v or "relative_path" in v) else "web"
            v.setdefault("name", v.get("url") or v.get("local_path"))
            return v
        if dt == "serializable":
            return value
        if dt == "password":
            if not isinstance(value, str):
                raise errors.bad_value(method, name, dt, value)
            return hash_secret(value)
        if dt in ("float", "currency") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        check_scalar(dt, value, method, name)
        if dt in ("number", "percent", "duration", "timecode") and not -2**31 <= value < 2**31:
            raise errors.bad_value(method, name, dt, value)
        return value

    def _link(self, method: str, etype: str, fs: FieldSchema, v: Any) -> dict[str, Any]:
        if not (isinstance(v, dict) and isinstance(v.get("type"), str)
                and isinstance(v.get("id"), int) and not isinstance(v.get("id"), bool)):
            raise errors.bad_value(method, fs.name, fs.data_type, v)
        if fs.valid_types and v["type"] not in fs.valid_types:
            raise errors.crud(method, f"Invalid type '{v['type']}' for field '{fs.name}' of "
                                      f"entity type '{etype}'; valid types: {', '.join(fs.valid_types)}.")
        if self.store.get_active(v["type"], v["id"]) is None:
            raise errors.not_found(method, v["type"], v["id"])
        return {"type": v["type"], "id": v["id"]}

    def _fields(self, method: str, etype: str, fields: Any) -> list[tuple[FieldSchema, Any, str]]:
        """Wire `fields` list -> [(schema, raw value, multi mode)]; faults on bad shapes."""
        if fields is None:
            fields = []
        if not isinstance(fields, list):
            raise errors.crud(method, "'fields' must be a list")
        out = []
        for f in fields:
            if not isinstance(f, dict) or not isinstance(f.get("field_name"), str):
                raise errors.crud(method, f"malformed field entry {f!r}")
            fs = self.store.schema.get_field(etype, f["field_name"])
            if fs is None:
                raise errors.unknown_field(method, etype, f["field_name"])
            mode = f.get("multi_entity_update_mode") or "set"
            if mode not in MODES:
                raise errors.crud(method, f"multi_entity_update_mode must be one of {MODES}, got {mode!r}")
            out.append((fs, f.get("value"), mode))
        return out

    def _type(self, method: str, params: Any) -> str:
        if not isinstance(params, dict):
            raise errors.crud(method, "parameters must be an object")
        etype = params.get("type")
        if not isinstance(etype, str) or etype not in self.store.schema:
            raise errors.unknown_entity_type(method, etype)
        return etype

    def _id(self, method: str, params: dict[str, Any]) -> int:
        eid = params.get("id")
        if not isinstance(eid, int) or isinstance(eid, bool):
            raise errors.crud(method, f"'id' must be an integer, got {eid!r}")
        return eid

    # -- inverse links -------------------------------------------------------------------
    def _link_changed(self, actor: Actor, src_type: str, src_id: int, field: str,
                      added: list[dict[str, Any]], removed: list[dict[str, Any]],
                      original_event: int | None, depth: int = 0) -> None:
        """Keep inverse fields (Shot.tasks <-> Task.entity) in step, with back-reference events."""
        if not self.inverse or depth > 1:
            return
        src = {"type": src_type, "id": src_id}
        for link, adding in [(l, True) for l in added] + [(l, False) for l in removed]:
            inv = self.inverse.get((src_type, field, link["type"]))
            if not inv:
                continue
            fs = self.store.schema.get_field(link["type"], inv)
            target = self.store.get_active(link["type"], link["id"])
            if fs is None or target is None or not fs.is_link:
                continue
            rec = self.store.modify(link["type"], link["id"])
            project = rec.get("project") if isinstance(rec.get("project"), dict) else None
            extra = {"actual_attribute_changed": f"{src_type}.{field}",
                     "original_event_log_entry_id": original_event}
            if fs.is_multi:
                cur = list(rec.get(inv) or [])
                has = any(_key(x) == _key(src) for x in cur)
                if adding == has:
                    continue
                rec[inv] = cur + [src] if adding else [x for x in cur if _key(x) != _key(src)]
                ev = self._ev_link(src_type, src_id)
                self.events.change(actor, link["type"], link["id"], inv, fs.data_type, project,
                                   added=[ev] if adding else [], removed=[] if adding else [ev], extra=extra)
            else:
                old = rec.get(inv)
                if adding:
                    if old and _key(old) == _key(src):
                        continue
                    rec[inv] = dict(src)
                    if old and self.store.get_active(old["type"], old["id"]):
                        # the target left its previous holder: drop it there as well
                        self._drop_from(actor, old, link, inv, original_event)
                else:
                    if not old or _key(old) != _key(src):
                        continue
                    rec[inv] = None
                self.events.change(actor, link["type"], link["id"], inv, fs.data_type, project,
                                   old=self._event_value(fs, old),
                                   new=self._event_value(fs, src) if adding else None, extra=extra)

    def _drop_from(self, actor: Actor, holder: dict[str, Any], item: dict[str, Any], inv: str,
                   original_event: int | None) -> None:
        back = self.inverse.get((item["type"], inv, holder["type"]))
        fs = self.store.schema.get_field(holder["type"], back) if back else None
        if fs is None or not fs.is_multi:
            return
        rec = self.store.modify(holder["type"], holder["id"])
        cur = rec.get(back) or []
        if any(_key(x) == _key(item) for x in cur):
            rec[back] = [x for x in cur if _key(x) != _key(item)]
            self.events.change(actor, holder["type"], holder["id"], back, fs.data_type,
                               rec.get("project") if isinstance(rec.get("project"), dict) else None,
                               added=[], removed=[self._ev_link(item["type"], item["id"])],
                               extra={"actual_attribute_changed": f"{item['type']}.{inv}",
                                      "original_event_log_entry_id": original_event})

    def _ev_link(self, etype: str, eid: int) -> dict[str, Any]:
        return {"type": etype, "id": eid, "name": self.engine.name_of(etype, eid), "valid": "valid"}

    def _event_value(self, fs: FieldSchema, v: Any) -> Any:
        if fs.data_type == "entity":
            return {"type": v["type"], "id": v["id"], "name": self.engine.name_of(v["type"], v["id"])} if v else None
        if fs.data_type == "password":
            return None
        return v

    # -- apply one field -------------------------------------------------------------------
    def _apply(self, actor: Actor, method: str, etype: str, eid: int, rec: dict[str, Any],
               fs: FieldSchema, raw: Any, mode: str, in_create: bool) -> None:
        value = self.coerce(method, etype, fs, raw)
        old = empty_value(fs.data_type) if in_create else rec.get(fs.name, empty_value(fs.data_type))
        project = rec.get("project") if isinstance(rec.get("project"), dict) else None
        if fs.is_multi:
            old = list(old or [])
            if mode == "add":
                have = {_key(x) for x in old}
                value = old + [x for x in value if _key(x) not in have]
            elif mode == "remove":
                drop = {_key(x) for x in value}
                value = [x for x in old if _key(x) not in drop]
            rec[fs.name] = value
            old_keys, new_keys = {_key(x) for x in old}, {_key(x) for x in value}
            added = [x for x in value if _key(x) not in old_keys]
            removed = [x for x in old if _key(x) not in new_keys]
            if not added and not removed and not in_create:
                return
            ev = self.events.change(actor, etype, eid, fs.name, fs.data_type, project,
                                    added=[self._ev_link(*_key(x)) for x in added],
                                    removed=[self._ev_link(*_key(x)) for x in removed], in_create=in_create)
            self._link_changed(actor, etype, eid, fs.name, added, removed, ev)
            return
        rec[fs.name] = value
        if old == value and not in_create:
            return
        ev = self.events.change(actor, etype, eid, fs.name, fs.data_type, project,
                                old=self._event_value(fs, old), new=self._event_value(fs, value),
                                in_create=in_create)
        if fs.data_type == "entity":
            self._link_changed(actor, etype, eid, fs.name, [value] if value else [],
                               [old] if old else [], ev)

    # -- RPCs ---------------------------------------------------------------------------------
    def create(self, actor: Actor, params: Any, method: str = "create") -> dict[str, Any]:
        etype = self._type(method, params)
        fields = self._fields(method, etype, params.get("fields"))
        render = self.engine.renderer(etype, params.get("return_fields"), method)
        now = format_datetime(utcnow())
        with self.store.transaction():
            eid = self.store.allocate_id(etype)
            schema = self.store.schema[etype]
            rec: dict[str, Any] = {"id": eid}
            for fname, fs in schema.fields.items():  # defaults first
                if fname == "id" or not fs.is_stored or fs.data_type in UNREADABLE:
                    continue
                if fs.data_type == "checkbox":
                    rec[fname] = bool(fs.default_value)
                elif fs.default_value is not None and fs.data_type in ("list", "status_list", "number",
                                                                        "text", "float", "duration"):
                    rec[fname] = fs.default_value
            sent = {fs.name for fs, _, _ in fields}
            auto = {"created_at": now, "updated_at": now,
                    "created_by": dict(actor.user) if actor.user else None,
                    "updated_by": dict(actor.user) if actor.user else None}
            for fname, v in auto.items():
                if fname in schema.fields and fname not in sent:
                    rec[fname] = v
            # the project link is set first so events carry it
            for fs, raw, _ in fields:
                if fs.name == "project":
                    rec["project"] = self.coerce(method, etype, fs, raw)
            self.store.insert(etype, rec)
            self.events.new(actor, etype, eid, rec.get("project"))
            for fs, raw, _ in fields:
                rec = self.store.modify(etype, eid)
                self._apply(actor, method, etype, eid, rec, fs, raw, "set", in_create=True)
            if etype != "Task" and isinstance(rec.get("task_template"), dict):
                self._apply_task_template(actor, etype, eid, rec, rec["task_template"])
        out = render(self.store.tables[etype][eid])
        for fs, _, _ in fields:
            if fs.name not in out:
                out[fs.name] = self.engine.formatter(fs.data_type)(self.store.tables[etype][eid].get(fs.name))
        return out

    #: Task fields copied from a template task (links other than these are not copied).
    TEMPLATE_LINKS = ("step", "task_assignees")

    def _apply_task_template(self, actor: Actor, etype: str, eid: int, rec: dict[str, Any],
                             template: dict[str, Any]) -> None:
        """Creating an entity with a task_template creates its Tasks, as the site does.

        The template's tasks are the active Tasks linked to the TaskTemplate with no
        `entity`; each is copied onto the new entity (same transaction, own events).
        """
        schema = self.store.schema
        if "Task" not in schema or not schema.get_field("Task", "task_template") \
                or not schema.get_field("Task", "entity"):
            return
        task_fields = schema["Task"].fields
        for tid in self.store.ids("Task"):
            t = self.store.tables["Task"][tid]
            tt, ent = t.get("task_template"), t.get("entity")
            if not (isinstance(tt, dict) and _key(tt) == _key(template)) or ent:
                continue
            fields = [{"field_name": "entity", "value": {"type": etype, "id": eid}}]
            if isinstance(rec.get("project"), dict) and "project" in task_fields:
                fields.append({"field_name": "project", "value": rec["project"]})
            for fname, fs in task_fields.items():
                if fname in ("id", "entity", "project", "task_template", "image", "filmstrip_image") \
                        or fname in AUTO_FIELDS or fs.data_type in UNREADABLE or fs.data_type == "password" \
                        or fname not in t or t[fname] in (None, []):
                    continue
                if fs.is_link and fname not in self.TEMPLATE_LINKS:
                    continue
                fields.append({"field_name": fname, "value": t[fname]})
            self.create(actor, {"type": "Task", "fields": fields})

    def update(self, actor: Actor, params: Any, method: str = "update") -> dict[str, Any]:
        etype = self._type(method, params)
        eid = self._id(method, params)
        fields = self._fields(method, etype, params.get("fields"))
        legacy = params.get("multi_entity_update_mode")
        if self.store.get_active(etype, eid) is None:
            raise errors.not_found(method, etype, eid)
        with self.store.transaction():
            rec = self.store.modify(etype, eid)
            for fs, raw, mode in fields:
                if legacy in MODES and mode == "set":
                    mode = legacy
                self._apply(actor, method, etype, eid, rec, fs, raw, mode, in_create=False)
            sent = {fs.name for fs, _, _ in fields}
            strip = self.store.schema.get_field(etype, "filmstrip_image")
            if "image" in sent and rec.get("image") is None and strip is not None \
                    and "filmstrip_image" not in sent and rec.get("filmstrip_image") is not None:
                # clearing the thumbnail clears the filmstrip too (the client's docstrings)
                self._apply(actor, method, etype, eid, rec, strip, None, "set", in_create=False)
            schema = self.store.schema[etype]
            if "updated_at" in schema.fields and not any(fs.name == "updated_at" for fs, _, _ in fields):
                rec["updated_at"] = format_datetime(utcnow())
            if "updated_by" in schema.fields and not any(fs.name == "updated_by" for fs, _, _ in fields):
                rec["updated_by"] = dict(actor.user) if actor.user else None
        out: dict[str, Any] = {"type": etype, "id": eid}
        for fs, _, _ in fields:
            v = self.engine.formatter(fs.data_type)(rec.get(fs.name, empty_value(fs.data_type)))
            if fs.is_multi:
                v = [{**x, "valid": "valid"} for x in v]
            out[fs.name] = v
        return out

    def delete(self, actor: Actor, params: Any, method: str = "delete") -> bool:
        etype = self._type(method, params)
        eid = self._id(method, params)
        rec = self.store.get(etype, eid)
        if rec is None:
            raise errors.not_found(method, etype, eid)
        with self.store.transaction():
            if self.store.is_retired(etype, eid):
                return False
            when = retirement_stamp()
            self.store.set_retired(etype, eid, True)
            self.store.meta.setdefault("retirement_dates", {})[f"{etype}:{eid}"] = when
            self.events.retirement(actor, etype, eid, _project(rec), when)
        return True

    def revive(self, actor: Actor, params: Any, method: str = "revive") -> bool:
        etype = self._type(method, params)
        eid = self._id(method, params)
        rec = self.store.get(etype, eid)
        if rec is None:
            raise errors.not_found(method, etype, eid)
        with self.store.transaction():
            if not self.store.is_retired(etype, eid):
                return False
            self.store.set_retired(etype, eid, False)
            was = self.store.meta.setdefault("retirement_dates", {}).pop(f"{etype}:{eid}", None)
            self.events.revival(actor, etype, eid, _project(rec), was)
        return True

    def batch(self, actor: Actor, requests: Any) -> list[Any]:
        """All or nothing: any fault undoes every earlier request of the batch."""
        if not isinstance(requests, list):
            raise errors.crud("batch", "batch parameters must be a list of requests")
        out: list[Any] = []
        with self.store.transaction():
            for req in requests:
                if not isinstance(req, dict):
                    raise errors.crud("batch", f"malformed batch request {req!r}")
                kind = req.get("request_type")
                if kind == "create":
                    out.append(self.create(actor, req))
                elif kind == "update":
                    out.append(self.update(actor, req))
                elif kind == "delete":
                    out.append(self.delete(actor, req))
                else:
                    raise errors.crud("batch", f"unknown request_type {kind!r}")
        return out


def _project(rec: dict[str, Any]) -> dict[str, Any] | None:
    p = rec.get("project")
    return p if isinstance(p, dict) else None
