"""One class per ShotGrid data type: its SQL columns and its wire <-> database conversion.

Everything the store and the read engine need to know about a data type lives here,
so adding a type is adding a class. Link names are *not* stored: they are joined from
the target's table at read time, so renaming a Shot never leaves stale links behind.
"""

from __future__ import annotations

import json
from functools import cached_property, lru_cache
from typing import Any, ClassVar

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)
from sqlalchemy.sql.type_api import TypeEngine

from ..schema import FieldSchema

#: Bumped whenever a class below changes its columns or their contents (2: casefold instead
#: of lower; `__ci` shadows on short codes and tag lists; 3: secrets never stored; 4: nor inside
#: EventLogEntry.meta). A database written under another layout is refused at open
#: (CacheService.open) and must be rebuilt.
LAYOUT_VERSION = 4


def fold(value: str) -> str:
    """Case folding used for every case-insensitive text comparison and sort.

    Done in Python (stored in a shadow column) because SQLite's lower() only folds
    ASCII while PostgreSQL's depends on the locale: this way both stores agree. Full
    Unicode case folding (``ß`` = ``ss``), as the site compares text.
    """
    return value.casefold()


#: Separates folded tag names in a tag list's shadow column; tags never contain it.
TAG_SEP = "\x1f"


def text_type() -> TypeEngine[Any]:
    """Text compared byte-wise (code point order) on both SQLite and PostgreSQL."""
    return Text().with_variant(Text(collation="C"), "postgresql")


class FieldType:
    """How one data type is stored. Subclasses override what differs."""

    data_types: ClassVar[tuple[str, ...]] = ()
    #: False for values the cache must never serve (signed URLs, masked secrets, UI-only).
    cacheable: ClassVar[bool] = True

    def __init__(self, fs: FieldSchema) -> None:
        self.fs = fs
        self.name = fs.name

    # -- schema ---------------------------------------------------------------
    def columns(self) -> list[Column[Any]]:
        return [Column(self.name, self.sql_type(), nullable=True)]

    def sql_type(self) -> TypeEngine[Any]:
        return text_type()

    def indexes(self, table: Table) -> list[Index]:
        return []

    # -- values -----------------------------------------------------------------
    def to_db(self, value: Any) -> dict[str, Any]:
        """Wire value -> column values."""
        return {self.name: value}

    def to_row(self, value: Any) -> tuple[Any, ...]:
        """`to_db` as a tuple in `column_names` order: the bulk writers build millions of
        rows, and a tuple per field costs far less than a dict merged into the row. Types
        whose `to_db` is the base one are not called at all (`EntityTable.shape_of`)."""
        d = self.to_db(value)
        return tuple([d[c] for c in self.column_names])

    def from_db(self, row: Any) -> Any:
        """Column values of a row (mapping) -> wire value."""
        return row[self.name]

    @cached_property
    def column_names(self) -> list[str]:
        # Cached: building the Column objects costs more than a primary-key read.
        return [c.name for c in self.columns()]

    @cached_property
    def value_columns(self) -> list[str]:
        """The columns `from_db` reads: not the `__ci` shadows kept for filters and sorts."""
        return [c for c in self.column_names if c != self.name + "__ci"]


class FoldedField(FieldType):
    """Text-like values with a case-folded `<field>__ci` shadow for comparisons and sorts."""

    def columns(self) -> list[Column[Any]]:
        return [Column(self.name, text_type()), Column(self.name + "__ci", text_type())]

    def to_db(self, value: Any) -> dict[str, Any]:
        return {self.name: value, self.name + "__ci": fold(value) if isinstance(value, str) else None}

    def to_row(self, value: Any) -> tuple[Any, ...]:
        return (value, fold(value) if isinstance(value, str) else None)


class TextField(FoldedField):
    data_types = ("text",)

    def indexes(self, table: Table) -> list[Index]:
        if self.name in ("code", "name", "content", "login", "event_type"):
            return [Index(f"ix_{table.name}_{self.name}__ci", table.c[self.name + "__ci"])]
        return []


class StringField(FoldedField):
    """Short codes (status, list, entity type, colour, uuid, footage): compared case-insensitively."""

    data_types = ("list", "status_list", "entity_type", "color", "uuid", "footage")


class IntField(FieldType):
    data_types = ("number", "percent", "duration", "timecode")

    def sql_type(self) -> TypeEngine[Any]:
        return BigInteger()


class FloatField(FieldType):
    data_types = ("float", "currency")

    def sql_type(self) -> TypeEngine[Any]:
        return Float()

    def from_db(self, row: Any) -> Any:
        v = row[self.name]
        return float(v) if v is not None else None


class BoolField(FieldType):
    data_types = ("checkbox",)

    def sql_type(self) -> TypeEngine[Any]:
        return Boolean()

    def from_db(self, row: Any) -> Any:
        v = row[self.name]
        return bool(v) if v is not None else None


class DateField(FieldType):
    """`YYYY-MM-DD` text: sorts and compares correctly as text, identical on both stores."""

    data_types = ("date",)

    def sql_type(self) -> TypeEngine[Any]:
        return String(10).with_variant(String(10, collation="C"), "postgresql")


class DateTimeField(FieldType):
    """`YYYY-MM-DDTHH:MM:SSZ` UTC text, exactly the wire form; ordered as text."""

    data_types = ("date_time",)

    def sql_type(self) -> TypeEngine[Any]:
        return String(20).with_variant(String(20, collation="C"), "postgresql")

    def indexes(self, table: Table) -> list[Index]:
        if self.name == "updated_at":
            return [Index(f"ix_{table.name}_updated_at", table.c.updated_at)]
        return []


#: `json.dumps(v, sort_keys=True, ensure_ascii=False)`, without building an encoder per call.
_json_dumps = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def _dumps(value: Any) -> str:
    """A structured value as stored: JSON text, keys sorted. orjson (a scan stores millions)
    unless it refuses the value (an integer past 64 bits, a lone surrogate, a non-text
    key); either way `from_db`'s json.loads gives back the same value."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return _json_dumps(value)


class JsonField(FieldType):
    """Opaque structured values (serializable, url, tag_list): stored as JSON text."""

    data_types = ("serializable", "url")

    def to_db(self, value: Any) -> dict[str, Any]:
        return {self.name: _dumps(value) if value is not None else None}

    def to_row(self, value: Any) -> tuple[Any, ...]:
        return (_dumps(value) if value is not None else None,)

    def from_db(self, row: Any) -> Any:
        v = row[self.name]
        return json.loads(v) if v is not None else None


#: Stored in place of an EventLogEntry.meta the cache refuses to hold (json.dumps never
#: writes text starting with "!"); read back as WITHHELD.
WITHHELD_TEXT = "!withheld"


class _Withheld:
    def __repr__(self) -> str:
        return "WITHHELD"


#: What `from_db` returns for a value the cache does not hold: the read engine passes the
#: read through, so the site answers it (with its own permission checks).
WITHHELD = _Withheld()


class EventMetaField(JsonField):
    """EventLogEntry.meta, withheld when the event changed a field the cache refuses to hold.

    Such a meta carries the field's values (`old_value`/`new_value`: when a script's key
    changes, the new key): whatever `field_type` keeps out of the cache as a field is kept
    out of the event log too. The whole meta is withheld, not just the values, since the
    site may put them in other keys too; reads of it go to the site.
    """

    def to_db(self, value: Any) -> dict[str, Any]:
        if refuses_meta(value):
            return {self.name: WITHHELD_TEXT}
        return super().to_db(value)

    def to_row(self, value: Any) -> tuple[Any, ...]:
        return (WITHHELD_TEXT,) if refuses_meta(value) else super().to_row(value)

    def from_db(self, row: Any) -> Any:
        if row[self.name] == WITHHELD_TEXT:
            return WITHHELD
        return super().from_db(row)


class TagListField(JsonField):
    """Tag names as JSON, plus `<field>__ci`: the folded names joined by TAG_SEP, framed by it
    (`\x1fhero\x1fvfx\x1f`), so "has tag" and "a tag contains" are one LIKE; NULL when empty."""

    data_types = ("tag_list",)

    def columns(self) -> list[Column[Any]]:
        return [Column(self.name, text_type()), Column(self.name + "__ci", text_type())]

    def to_db(self, value: Any) -> dict[str, Any]:
        names = [t for t in value if isinstance(t, str)] if isinstance(value, list) else []
        ci = TAG_SEP + TAG_SEP.join(fold(t) for t in names) + TAG_SEP if names else None
        return {**super().to_db(value), self.name + "__ci": ci}

    def to_row(self, value: Any) -> tuple[Any, ...]:
        if value == []:  # most tag lists
            return ("[]", None)
        d = self.to_db(value)
        return (d[self.name], d[self.name + "__ci"])

    def from_db(self, row: Any) -> Any:
        v = super().from_db(row)
        return list(v) if v else []


_NO_LINK = (None, None)


class EntityField(FieldType):
    """A single link, stored as `<field>__type` + `<field>__id`."""

    data_types = ("entity",)

    def columns(self) -> list[Column[Any]]:
        return [Column(self.name + "__type", String(64)), Column(self.name + "__id", Integer())]

    def to_db(self, value: Any) -> dict[str, Any]:
        if isinstance(value, dict) and value.get("type") and value.get("id") is not None:
            return {self.name + "__type": value["type"], self.name + "__id": int(value["id"])}
        return {self.name + "__type": None, self.name + "__id": None}

    def to_row(self, value: Any) -> tuple[Any, ...]:
        if isinstance(value, dict) and value.get("type") and value.get("id") is not None:
            return (value["type"], int(value["id"]))
        return _NO_LINK

    def indexes(self, table: Table) -> list[Index]:
        return [Index(f"ix_{table.name}_{self.name}", table.c[self.name + "__id"], table.c[self.name + "__type"])]

    def from_db(self, row: Any) -> Any:  # names are joined by the read engine
        t, i = row[self.name + "__type"], row[self.name + "__id"]
        return {"type": t, "id": i} if t is not None and i is not None else None


class MultiEntityField(FieldType):
    """A list of links, stored in its own association table in the site's order."""

    data_types = ("multi_entity", "addressing")

    def columns(self) -> list[Column[Any]]:
        return []

    def to_db(self, value: Any) -> dict[str, Any]:
        return {}

    def to_row(self, value: Any) -> tuple[Any, ...]:
        return ()

    def from_db(self, row: Any) -> Any:
        raise NotImplementedError("multi-entity values are read from the association table")


class UncachedField(FieldType):
    """Values the cache never serves: signed image URLs, masked passwords, UI-only columns."""

    data_types = ("image", "password", "pivot_column", "summary", "calculated", "system_task_type")
    cacheable = False

    def columns(self) -> list[Column[Any]]:
        return []

    def to_db(self, value: Any) -> dict[str, Any]:
        return {}


_BY_TYPE: dict[str, type[FieldType]] = {
    dt: cls
    for cls in (TextField, StringField, IntField, FloatField, BoolField, DateField,
                DateTimeField, JsonField, TagListField, EntityField, MultiEntityField, UncachedField)
    for dt in cls.data_types
}


#: Secrets the site stores in ordinary-typed fields: never copied into the cache, so
#: reads that ask for them always go to the site and its permission checks.
SECRET_FIELDS: frozenset[tuple[str, str]] = frozenset({
    ("ApiUser", "salted_password"),
})


def field_type(fs: FieldSchema) -> FieldType:
    """The storage class for a field; unknown data types and secrets are never cached."""
    if (fs.entity_type, fs.name) in SECRET_FIELDS:
        return UncachedField(fs)
    if (fs.entity_type, fs.name) == ("EventLogEntry", "meta") and fs.data_type == "serializable":
        return EventMetaField(fs)
    return _BY_TYPE.get(fs.data_type, UncachedField)(fs)


def refuses_meta(meta: Any) -> bool:
    """Whether an event's meta is about a field `field_type` refuses to cache (by the field's
    type and name as the meta states them; with no type stated, by name alone)."""
    if not isinstance(meta, dict):
        return False
    etype, attr, dt = meta.get("entity_type"), meta.get("attribute_name"), meta.get("field_data_type")
    if not isinstance(etype, str) or not isinstance(attr, str):
        return False
    if not isinstance(dt, str):
        return (etype, attr) in SECRET_FIELDS
    return _refused(etype, attr, dt)


@lru_cache(maxsize=4096)
def _refused(etype: str, attr: str, dt: str) -> bool:
    """Per (type, field, data type): every event's meta is checked, and a catch-up stores
    thousands of events naming the same few fields."""
    return not field_type(FieldSchema(etype, attr, dt)).cacheable
