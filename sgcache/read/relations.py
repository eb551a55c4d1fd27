"""The operator registry: (storage class, relation) -> how to build the SQL condition.

A relation that is not registered for a field's storage class is simply passed
through to the site; the docs' relation x type table is generated from this registry
(`support_table()`), so the table cannot drift from the code.

Null rules follow the site (protocol.md §5.1): `is None` matches empty values only,
`is_not v` and `not_in` include empty values, ordering relations never match empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    and_,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from ..store.field_types import (
    TAG_SEP,
    BoolField,
    DateField,
    DateTimeField,
    EntityField,
    FieldType,
    FloatField,
    IntField,
    MultiEntityField,
    StringField,
    TagListField,
    TextField,
    fold,
)
from .passthrough import Passthrough


@dataclass
class Ctx:
    """What a condition builder needs: the field, the table alias holding it, helpers."""

    ft: FieldType
    table: Any  # the FromClause holding the field's columns
    engine: Any  # the ReadEngine, for link helpers (names, child activity)

    def col(self, suffix: str = "") -> Any:
        name = "id" if self.ft.name == "id" else self.ft.name + suffix
        return self.table.c[name]

    @property
    def sqlite(self) -> bool:
        return bool(self.engine.store.dialect == "sqlite")


Builder = Callable[[Ctx, tuple[Any, ...]], ColumnElement[bool]]
_REGISTRY: dict[tuple[type[FieldType], str], Builder] = {}


def register(classes: tuple[type[FieldType], ...], *relations: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        for cls in classes:
            for rel in relations:
                _REGISTRY[(cls, rel)] = fn
        return fn
    return deco


def is_registered(cls: type[FieldType], relation: str) -> bool:
    """Whether (storage class, relation) has a local builder (the docs table reads this)."""
    return (cls, relation) in _REGISTRY


#: Relative to "now" and the site's time zone: always answered by the site.
TIME_RELATIONS = frozenset({"in_last", "not_in_last", "in_next", "not_in_next", "in_calendar_day",
                            "in_calendar_week", "in_calendar_month", "in_calendar_year"})

#: Storage classes the engine sorts on locally (others pass the read through).
SORTABLE = (TextField, StringField, BoolField, EntityField, IntField, FloatField, DateField, DateTimeField)


def builder_for(ft: FieldType, relation: str) -> Builder | None:
    return _REGISTRY.get((type(ft), relation))


def check_values(values: tuple[Any, ...]) -> None:
    """Passthrough for filter text holding NUL, whatever the relation and field type.

    No store compares it as the site does: PostgreSQL cannot bind it at all, and SQLite's
    LIKE reads a pattern only up to its first NUL (`contains "\0"` matched every row).
    """
    if any(isinstance(v, str) and "\0" in v for v in values):
        raise Passthrough("filter text holding NUL: the site decides")


# -- scalars ---------------------------------------------------------------------

SCALARS = (IntField, FloatField, DateField, DateTimeField)
FOLDED = (TextField, StringField)
ORDERED = (IntField, FloatField, DateField, DateTimeField)


def _scalar_col(ctx: Ctx) -> Any:
    return ctx.col("__ci") if isinstance(ctx.ft, FOLDED) else ctx.col()


def _scalar_val(ctx: Ctx, v: Any) -> Any:
    return fold(v) if isinstance(ctx.ft, FOLDED) and isinstance(v, str) else v


@register(SCALARS + FOLDED, "is")
def _is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c, v = _scalar_col(ctx), values[0]
    return c.is_(None) if v is None else c == _scalar_val(ctx, v)


@register(SCALARS + FOLDED, "is_not")
def _is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c, v = _scalar_col(ctx), values[0]
    return c.is_not(None) if v is None else or_(c != _scalar_val(ctx, v), c.is_(None))


def _in_expr(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = _scalar_col(ctx)
    vals = list(dict.fromkeys(_scalar_val(ctx, v) for v in values if v is not None))
    parts = []
    if vals:
        parts.append(c.in_(vals))
    if any(v is None for v in values):
        parts.append(c.is_(None))
    return or_(*parts) if parts else false()


@register(SCALARS + FOLDED, "in")
def _in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _in_expr(ctx, values)


@register(SCALARS + FOLDED, "not_in")
def _not_in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = _scalar_col(ctx)
    vals = list(dict.fromkeys(_scalar_val(ctx, v) for v in values if v is not None))
    has_null = any(v is None for v in values)
    inside = c.in_(vals) if vals else false()
    if has_null:
        return and_(c.is_not(None), not_(inside))
    return or_(c.is_(None), not_(inside))


@register(ORDERED, "less_than")
def _lt(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return ctx.col() < values[0]


@register(ORDERED, "greater_than")
def _gt(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return ctx.col() > values[0]


def _between_expr(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = ctx.col()
    lo, hi = values
    parts = [c.is_not(None)]
    if lo is not None:
        parts.append(c >= lo)
    if hi is not None:
        parts.append(c <= hi)
    return and_(*parts)


@register(ORDERED, "between")
def _between(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _between_expr(ctx, values)


@register(ORDERED, "not_between")
def _not_between(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = ctx.col()
    return and_(c.is_not(None), not_(_between_expr(ctx, values)))


# -- checkbox: a null checkbox is False ---------------------------------------------

@register((BoolField,), "is")
def _b_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return func.coalesce(ctx.col(), false()) == bool(values[0])


@register((BoolField,), "is_not")
def _b_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_b_is(ctx, values))


# -- text -------------------------------------------------------------------------

def like(ctx: Ctx, col: Any, s: str, kind: str) -> ColumnElement[bool]:
    """`col` (already folded) contains / starts with / ends with / equals folded `s`.

    An empty needle matches everything, null included: the site treats null text as "".
    On SQLite not with LIKE, which reads a value only up to its first NUL (a stored
    `zz\0tail` did not end with `tail`): instr() and byte comparisons read it whole, and a
    byte prefix or suffix of UTF-8 text is a character prefix or suffix.
    """
    if kind == "is":
        return func.coalesce(col, "") == s
    if s == "":
        return true()
    if ctx.sqlite:
        if kind == "contains":
            return func.instr(col, s) > 0
        b = s.encode("utf-8")
        start = 1 if kind == "starts_with" else -len(b)
        return func.substr(cast(col, LargeBinary), start, len(b)) == literal(b, LargeBinary)
    if kind == "contains":
        return col.contains(s, autoescape=True)
    if kind == "starts_with":
        return col.startswith(s, autoescape=True)
    return col.endswith(s, autoescape=True)


for _rel in ("contains", "starts_with", "ends_with"):
    def _make(rel: str) -> Builder:
        def build(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
            return like(ctx, ctx.col("__ci"), fold(values[0] or ""), rel)
        return build
    _REGISTRY[(TextField, _rel)] = _make(_rel)


@register((TextField,), "not_contains")
def _not_contains(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c, s = ctx.col("__ci"), fold(values[0] or "")
    if s == "":
        return false()
    return or_(c.is_(None), not_(like(ctx, c, s, "contains")))


# -- tag lists: "is" means has the tag; names compare folded -------------------------

def _tag_needle(v: Any) -> str | None:
    """The tag name a value stands for; a Tag entity dict is left to the site."""
    if v is not None and (not isinstance(v, str) or TAG_SEP in v):
        raise ctx_passthrough("tag value not answerable locally")
    return v


def ctx_passthrough(reason: str) -> Exception:
    return Passthrough(reason)


def _tag_has(ctx: Ctx, v: Any, exact: bool) -> ColumnElement[bool]:
    c = ctx.col("__ci")
    s = fold(v or "")
    if exact:
        return and_(c.is_not(None), like(ctx, c, TAG_SEP + s + TAG_SEP, "contains"))
    return and_(c.is_not(None), like(ctx, c, s, "contains"))


@register((TagListField,), "is")
def _t_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = _tag_needle(values[0])
    return ctx.col("__ci").is_(None) if v is None else _tag_has(ctx, v, True)


@register((TagListField,), "is_not")
def _t_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_t_is(ctx, values))


@register((TagListField,), "name_is")
def _t_name_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _tag_has(ctx, _tag_needle(values[0]) or "", True)


@register((TagListField,), "name_contains")
def _t_name_contains(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _tag_has(ctx, _tag_needle(values[0]), False)


@register((TagListField,), "name_not_contains")
def _t_name_not_contains(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_t_name_contains(ctx, values))


# -- links: only live targets (cached and not retired) count --------------------------

LINKS = (EntityField, MultiEntityField)
ChildPred = Callable[[Any, str], "ColumnElement[bool] | None"]


def _any_link(ctx: Ctx, pred: ChildPred | None = None,
              only: dict[str, list[int]] | None = None) -> ColumnElement[bool]:
    """EXISTS a live linked entity (optionally one whose row matches pred(child, type),
    or whose (type, id) is in `only`)."""
    return ctx.engine.link_exists(ctx.table, ctx.ft, pred, only)


def _keys(values: tuple[Any, ...]) -> set[tuple[str, int]]:
    return {(v["type"], int(v["id"])) for v in values if isinstance(v, dict)}


def _is_one_of(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    keys = _keys(values)
    parts = []
    if keys:
        only: dict[str, list[int]] = {}
        for t, i in sorted(keys):
            only.setdefault(t, []).append(i)
        parts.append(_any_link(ctx, only=only))
    if any(v is None for v in values):
        parts.append(not_(_any_link(ctx)))
    return or_(*parts) if parts else false()


@register(LINKS, "is", "in")
def _l_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _is_one_of(ctx, values)


@register(LINKS, "is_not", "not_in")
def _l_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_is_one_of(ctx, values))


@register(LINKS, "type_is")
def _l_type_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = values[0]
    if v is None:
        return not_(_any_link(ctx))
    return _any_link(ctx, lambda child, t: true() if t == v else None)


@register(LINKS, "type_is_not")
def _l_type_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_l_type_is(ctx, values))


def _name_match(ctx: Ctx, values: tuple[Any, ...], kind: str) -> ColumnElement[bool]:
    s = fold(values[0] or "")

    def pred(child: Any, t: str) -> ColumnElement[bool] | None:
        col = ctx.engine.name_ci(t, child)
        if col is None:  # a type without a name field: its links are named ""
            return true() if s == "" else false()
        return like(ctx, func.coalesce(col, ""), s, kind)
    return _any_link(ctx, pred)


for _rel, _kind in (("name_contains", "contains"), ("name_starts_with", "starts_with"),
                    ("name_ends_with", "ends_with"), ("name_is", "is")):
    def _make_name(kind: str) -> Builder:
        def build(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
            return _name_match(ctx, values, kind)
        return build
    for _cls in LINKS:
        _REGISTRY[(_cls, _rel)] = _make_name(_kind)
# addressing's contains/not_contains are name relations
_REGISTRY[(MultiEntityField, "contains")] = _make_name("contains")


@register(LINKS, "name_not_contains", "not_contains")
def _l_name_not_contains(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_name_match(ctx, values, "contains"))


__all__ = ["Ctx", "builder_for", "is_registered", "register", "true", "literal", "exists", "select"]
