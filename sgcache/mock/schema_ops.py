"""Schema RPCs: reads (served from the Schema model) and field create/update/delete.

Field edits write `Shotgun_DisplayColumn_New`/`_Change` events which, like the
site's, do not say which entity type owns the field; deleting writes none.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..protocol import errors
from ..schema import DATA_TYPES, FieldSchema
from .auth import Actor
from .events import EventLog
from .store import Store

_TOP_LEVEL = ("name", "description", "visible", "mandatory", "unique", "editable")


def _wrap(v: Any, editable: bool = True) -> dict[str, Any]:
    return {"editable": editable, "value": v}


def system_name(display: str) -> str:
    """'Project Visibility Test' -> 'sg_project_visibility_test'."""
    snake = re.sub(r"[^0-9a-zA-Z]+", "_", display).strip("_").lower()
    return "sg_" + (snake or "field")


class SchemaOps:
    def __init__(self, store: Store, events: EventLog) -> None:
        self.store = store
        self.events = events
        self._cache: dict[str, tuple[int, Any]] = {}

    def _cached(self, key: str, build: Any) -> Any:
        hit = self._cache.get(key)
        if hit is None or hit[0] != self.store.schema_version:
            hit = (self.store.schema_version, build())
            self._cache[key] = hit
        return hit[1]

    def _changed(self) -> None:
        self.store.schema_version += 1
        self.store.version += 1

    def _type(self, method: str, params: Any) -> str:
        if not isinstance(params, dict):
            raise errors.crud(method, "parameters must be an object")
        etype = params.get("type")
        if not isinstance(etype, str) or etype not in self.store.schema:
            raise errors.unknown_entity_type(method, etype)
        return etype

    def _props(self, method: str, props: Any) -> dict[str, Any]:
        if props is None:
            return {}
        if not isinstance(props, list) or not all(
                isinstance(p, dict) and isinstance(p.get("property_name"), str) for p in props):
            raise errors.crud(method, "'properties' must be a list of {property_name, value}")
        return {p["property_name"]: p.get("value") for p in props}

    def _column_id(self, etype: str, fname: str) -> int:
        ids = self.store.meta.setdefault("display_columns", {})
        key = f"{etype}.{fname}"
        if key not in ids:
            ids[key] = self.store.meta.get("display_column_next", 1)
            self.store.meta["display_column_next"] = ids[key] + 1
        return ids[key]

    # -- reads --------------------------------------------------------------------
    def schema_read(self, params: Any) -> Any:
        return self._cached("read", self.store.schema.to_schema_read)

    def schema_entity_read(self, params: Any) -> Any:
        return self._cached("entity", self.store.schema.to_schema_entity_read)

    def schema_field_read(self, params: Any) -> Any:
        etype = self._type("schema_field_read", params)
        fields = self.store.schema[etype].fields
        fname = params.get("field_name")
        if fname is None:
            return {f: fs.to_site() for f, fs in fields.items()}
        if fname not in fields:
            raise errors.unknown_field("schema_field_read", etype, fname)
        return {fname: fields[fname].to_site()}

    # -- writes --------------------------------------------------------------------
    def schema_field_create(self, actor: Actor, params: Any) -> str:
        m = "schema_field_create"
        etype = self._type(m, params)
        data_type = params.get("data_type")
        if data_type not in DATA_TYPES or data_type in ("pivot_column", "summary", "calculated"):
            raise errors.crud(m, f"Invalid data type {data_type!r}.")
        props = self._props(m, params.get("properties"))
        display = props.get("name")
        if not isinstance(display, str) or not display.strip():
            raise errors.crud(m, "the 'name' property is required")
        ent = self.store.schema[etype]
        base = name = system_name(display)
        n = 0
        while name in ent.fields:
            n += 1
            name = f"{base}_{n}"
        fs = FieldSchema(etype, name, data_type, display_name=display,
                         valid_types=tuple(props.get("valid_types") or ()),
                         valid_values=tuple(props.get("valid_values") or ()),
                         default_value=props.get("default_value"))
        raw = copy.deepcopy(fs.to_site())
        raw["visible"] = _wrap(True, True)
        self._set_props(raw, props)
        ent.fields[name] = FieldSchema.from_site(etype, name, raw)
        self._changed()
        with self.store.transaction():
            self.events.display_column(actor, "New", self._column_id(etype, name), {
                "human_name": display, "data_type": data_type,
                "properties": {k: v for k, v in props.items() if k != "name"}})
        return name

    def _set_props(self, raw: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
        old: dict[str, Any] = {}
        for k, v in props.items():
            if k in _TOP_LEVEL:
                old[k] = (raw.get(k) or {}).get("value")
                raw[k] = _wrap(v, (raw.get(k) or {}).get("editable", True))
            else:
                p = raw.setdefault("properties", {})
                old[k] = (p.get(k) or {}).get("value")
                p[k] = _wrap(v, (p.get(k) or {}).get("editable", True))
        return old

    def schema_field_update(self, actor: Actor, params: Any) -> bool:
        m = "schema_field_update"
        etype = self._type(m, params)
        fname = params.get("field_name")
        ent = self.store.schema[etype]
        if fname not in ent.fields:
            raise errors.unknown_field(m, etype, fname)
        props = self._props(m, params.get("properties"))
        raw = copy.deepcopy(ent.fields[fname].to_site())
        old = self._set_props(raw, props)
        ent.fields[fname] = FieldSchema.from_site(etype, fname, raw)
        self._changed()
        with self.store.transaction():
            for k, v in props.items():
                self.events.display_column(actor, "Change", self._column_id(etype, fname), {
                    "attribute_name": k, "human_name": ent.fields[fname].display_name,
                    "old_value": old.get(k), "new_value": v})
        return True

    def schema_field_delete(self, actor: Actor, params: Any) -> bool:
        m = "schema_field_delete"
        etype = self._type(m, params)
        fname = params.get("field_name")
        ent = self.store.schema[etype]
        if fname not in ent.fields:
            raise errors.unknown_field(m, etype, fname)
        if fname in ("id", "created_at", "updated_at", "created_by", "updated_by") or not fname.startswith("sg_"):
            raise errors.crud(m, f"Field '{fname}' of entity type '{etype}' cannot be deleted.")
        del ent.fields[fname]
        for rec in self.store.tables.get(etype, {}).values():
            rec.pop(fname, None)
        self._changed()
        self.store.bump(etype)
        return True
