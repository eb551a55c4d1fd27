"""The site schema as a typed model, shared by the mock site and the cache.

Both sides read and write the site's own JSON shapes (`schema_read` and
`schema_entity_read`), so a dump taken from a real site, the bundled fixture and
our built-in studio schema all load the same way. The original site dicts are
kept verbatim (`raw`) so that a schema served back out is byte-identical.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

#: Every data type the site reports, with whether it holds a real, storable value.
DATA_TYPES: tuple[str, ...] = (
    "addressing", "calculated", "checkbox", "color", "currency", "date", "date_time",
    "duration", "entity", "entity_type", "float", "footage", "image", "list",
    "multi_entity", "number", "password", "percent", "pivot_column", "serializable",
    "status_list", "summary", "system_task_type", "tag_list", "text", "timecode", "url",
    "uuid",
)

#: Types whose values are UI-only or computed by the site; never stored or cached.
UNSTORED_TYPES: frozenset[str] = frozenset({"pivot_column", "summary", "calculated", "query"})

#: Types holding links to other entities.
LINK_TYPES: frozenset[str] = frozenset({"entity", "multi_entity", "addressing"})
MULTI_LINK_TYPES: frozenset[str] = frozenset({"multi_entity", "addressing"})


def _wrap(value: Any, editable: bool = False) -> dict[str, Any]:
    return {"editable": editable, "value": value}


@dataclass
class FieldSchema:
    """One field of one entity type, with the few properties code needs typed."""

    entity_type: str
    name: str
    data_type: str
    display_name: str = ""
    valid_types: tuple[str, ...] = ()
    valid_values: tuple[str, ...] = ()
    default_value: Any = None
    editable: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_link(self) -> bool:
        return self.data_type in LINK_TYPES

    @property
    def is_multi(self) -> bool:
        return self.data_type in MULTI_LINK_TYPES

    @property
    def is_stored(self) -> bool:
        return self.data_type not in UNSTORED_TYPES

    @classmethod
    def from_site(cls, entity_type: str, name: str, d: dict[str, Any]) -> "FieldSchema":
        props = d.get("properties") or {}

        def pv(key: str, default: Any = None) -> Any:
            p = props.get(key)
            return p.get("value", default) if isinstance(p, dict) else default

        def v(key: str, default: Any = None) -> Any:
            p = d.get(key)
            return p.get("value", default) if isinstance(p, dict) else default

        return cls(
            entity_type=entity_type,
            name=name,
            data_type=v("data_type", "text"),
            display_name=v("name", name) or name,
            valid_types=tuple(pv("valid_types") or ()),
            valid_values=tuple(pv("valid_values") or ()),
            default_value=pv("default_value"),
            editable=bool(v("editable", True)),
            raw=d,
        )

    def to_site(self) -> dict[str, Any]:
        """The site's FIELD_DEF dict; built from typed attributes when there is no raw."""
        if self.raw:
            return self.raw
        props: dict[str, Any] = {
            "default_value": _wrap(self.default_value),
            "summary_default": _wrap("none", True),
        }
        if self.valid_types or self.data_type in LINK_TYPES or self.data_type == "tag_list":
            props["valid_types"] = _wrap(list(self.valid_types), True)
        if self.data_type in ("status_list", "list"):
            props["valid_values"] = _wrap(list(self.valid_values), True)
        if self.data_type == "url":
            props["open_in_new_window"] = _wrap(True, True)
        self.raw = {
            "data_type": _wrap(self.data_type),
            "description": _wrap("", True),
            "editable": _wrap(self.editable),
            "entity_type": _wrap(self.entity_type),
            "mandatory": _wrap(False),
            "name": _wrap(self.display_name or self.name, True),
            "properties": props,
            "unique": _wrap(False),
            "visible": _wrap(True),
        }
        return self.raw


@dataclass
class EntitySchema:
    """One entity type and its fields, in the site's field order."""

    name: str
    display_name: str = ""
    fields: dict[str, FieldSchema] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_site(self) -> dict[str, Any]:
        return self.raw or {"name": _wrap(self.display_name or self.name),
                            "visible": _wrap(True)}


class Schema:
    """All entity types of a site (or of the cached subset of one)."""

    def __init__(self, entities: dict[str, EntitySchema] | None = None) -> None:
        self.entities: dict[str, EntitySchema] = entities or {}

    # -- access -----------------------------------------------------------
    def __contains__(self, entity_type: object) -> bool:
        return entity_type in self.entities

    def __getitem__(self, entity_type: str) -> EntitySchema:
        return self.entities[entity_type]

    def get_field(self, entity_type: str, field_name: str) -> FieldSchema | None:
        ent = self.entities.get(entity_type)
        return ent.fields.get(field_name) if ent else None

    def types(self) -> list[str]:
        return list(self.entities)

    # -- site JSON ----------------------------------------------------------
    @classmethod
    def from_site(cls, schema_read: dict[str, Any],
                  schema_entity_read: dict[str, Any] | None = None) -> "Schema":
        schema_entity_read = schema_entity_read or {}
        entities: dict[str, EntitySchema] = {}
        for etype, fields in schema_read.items():
            eraw = schema_entity_read.get(etype) or {}
            disp = (eraw.get("name") or {}).get("value", etype) if eraw else etype
            ent = EntitySchema(etype, disp, raw=eraw)
            for fname, fdef in fields.items():
                ent.fields[fname] = FieldSchema.from_site(etype, fname, fdef)
            entities[etype] = ent
        return cls(entities)

    def to_schema_read(self) -> dict[str, Any]:
        return {t: {f: fs.to_site() for f, fs in e.fields.items()} for t, e in self.entities.items()}

    def to_schema_entity_read(self) -> dict[str, Any]:
        return {t: e.to_site() for t, e in self.entities.items()}

    def to_json(self) -> dict[str, Any]:
        return {"schema_read": self.to_schema_read(),
                "schema_entity_read": self.to_schema_entity_read()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Schema":
        if "schema_read" in data:
            return cls.from_site(data["schema_read"], data.get("schema_entity_read"))
        return cls.from_site(data)

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))

    def dump(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1, sort_keys=True)

    def copy(self) -> "Schema":
        return Schema.from_json(copy.deepcopy(self.to_json()))

    # -- selection ------------------------------------------------------------
    def filtered(self, rules: Iterable[str]) -> "Schema":
        """Keep the `Type.field` names the rules select.

        Rules are fnmatch patterns over `Type.field` applied in order, the last
        match winning; a leading `!` excludes; a bare `Type` means `Type.*`.
        A kept type always keeps `id`. Unstored (UI-only) fields are dropped.
        """
        parsed = []
        for rule in rules:
            rule = rule.strip()
            if not rule or rule.startswith("#"):
                continue
            neg = rule.startswith("!")
            pat = rule[1:] if neg else rule
            if "." not in pat:
                pat += ".*"
            parsed.append((not neg, pat))
        out: dict[str, EntitySchema] = {}
        for etype, ent in self.entities.items():
            keep: dict[str, FieldSchema] = {}
            for fname, fs in ent.fields.items():
                selected = False
                for include, pat in parsed:
                    if fnmatch.fnmatchcase(f"{etype}.{fname}", pat):
                        selected = include
                if selected and fs.is_stored:
                    keep[fname] = fs
            if keep:
                if "id" in ent.fields and "id" not in keep:
                    keep = {"id": ent.fields["id"], **keep}
                out[etype] = EntitySchema(etype, ent.display_name, keep, raw=ent.raw)
        return Schema(out)


def load_rules(path: str | Path) -> list[str]:
    """Read a rules file: a JSON list of patterns, or one pattern per line."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.strip()
    if stripped.startswith("["):
        return [str(r) for r in json.loads(stripped)]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
