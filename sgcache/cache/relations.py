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

from sqlalchemy import (ColumnElement, and_, exists, false, literal, not_, or_, select,
                        true)

from ..protocol.filters import RELATIONS
from .fields import (BoolField, DateField, DateTimeField, EntityField, FieldType, FloatField,
                     IntField, MultiEntityField, StringField, TextField, fold)


@dataclass
class Ctx:
    """What a condition builder needs: the field, the table alias holding it, helpers."""

    ft: FieldType
    table: Any  # the FromClause holding the field's columns
    engine: Any  # the ReadEngine, for link helpers (names, child activity)

    def col(self, suffix: str = "") -> Any:
        name = "id" if self.ft.name == "id" else self.ft.name + suffix
        return self.table.c[name]


Builder = Callable[[Ctx, tuple[Any, ...]], ColumnElement[bool]]
_REGISTRY: dict[tuple[type[FieldType], str], Builder] = {}


def register(classes: tuple[type[FieldType], ...], *relations: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        for cls in classes:
            for rel in relations:
                _REGISTRY[(cls, rel)] = fn
        return fn
    return deco


def builder_for(ft: FieldType, relation: str) -> Builder | None:
    return _REGISTRY.get((type(ft), relation))


# -- scalars ---------------------------------------------------------------------

SCALARS = (IntField, FloatField, DateField, DateTimeField, StringField, BoolField)
ORDERED = (IntField, FloatField, DateField, DateTimeField)


def _scalar_col(ctx: Ctx) -> Any:
    return ctx.col("__ci") if isinstance(ctx.ft, TextField) else ctx.col()


def _scalar_val(ctx: Ctx, v: Any) -> Any:
    return fold(v) if isinstance(ctx.ft, TextField) and isinstance(v, str) else v


@register(SCALARS + (TextField,), "is")
def _is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c, v = _scalar_col(ctx), values[0]
    return c.is_(None) if v is None else c == _scalar_val(ctx, v)


@register(SCALARS + (TextField,), "is_not")
def _is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c, v = _scalar_col(ctx), values[0]
    return c.is_not(None) if v is None else or_(c != _scalar_val(ctx, v), c.is_(None))


def _in_expr(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = _scalar_col(ctx)
    vals = [_scalar_val(ctx, v) for v in values if v is not None]
    parts = []
    if vals:
        parts.append(c.in_(vals))
    if any(v is None for v in values):
        parts.append(c.is_(None))
    return or_(*parts) if parts else false()


@register(SCALARS + (TextField,), "in")
def _in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _in_expr(ctx, values)


@register(SCALARS + (TextField,), "not_in")
def _not_in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = _scalar_col(ctx)
    vals = [_scalar_val(ctx, v) for v in values if v is not None]
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


# -- text -------------------------------------------------------------------------

def _like(ctx: Ctx, v: Any, kind: str) -> ColumnElement[bool]:
    c = ctx.col("__ci")
    s = fold(v or "")
    if kind == "contains":
        return c.contains(s, autoescape=True)
    if kind == "starts_with":
        return c.startswith(s, autoescape=True)
    return c.endswith(s, autoescape=True)


for _rel in ("contains", "starts_with", "ends_with"):
    def _make(rel: str) -> Builder:
        def build(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
            return _like(ctx, values[0], rel)
        return build
    _REGISTRY[(TextField, _rel)] = _make(_rel)


@register((TextField,), "not_contains")
def _not_contains(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    c = ctx.col("__ci")
    return or_(c.is_(None), not_(_like(ctx, values[0], "contains")))


# -- single links -----------------------------------------------------------------

def _link_eq(ctx: Ctx, v: dict[str, Any]) -> ColumnElement[bool]:
    return and_(ctx.col("__type") == v["type"], ctx.col("__id") == int(v["id"]))


@register((EntityField,), "is")
def _e_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = values[0]
    return ctx.col("__id").is_(None) if v is None else _link_eq(ctx, v)


@register((EntityField,), "is_not")
def _e_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = values[0]
    if v is None:
        return ctx.col("__id").is_not(None)
    return or_(ctx.col("__id").is_(None), not_(_link_eq(ctx, v)))


def _e_in_expr(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    parts = [_link_eq(ctx, v) for v in values if v is not None]
    if any(v is None for v in values):
        parts.append(ctx.col("__id").is_(None))
    return or_(*parts) if parts else false()


@register((EntityField,), "in")
def _e_in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _e_in_expr(ctx, values)


@register((EntityField,), "not_in")
def _e_not_in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    inside = _e_in_expr(ctx, tuple(v for v in values if v is not None))
    if any(v is None for v in values):
        return and_(ctx.col("__id").is_not(None), not_(inside))
    return or_(ctx.col("__id").is_(None), not_(inside))


@register((EntityField,), "type_is")
def _e_type_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = values[0]
    return ctx.col("__type").is_(None) if v is None else ctx.col("__type") == v


@register((EntityField,), "type_is_not")
def _e_type_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = values[0]
    c = ctx.col("__type")
    return c.is_not(None) if v is None else or_(c.is_(None), c != v)


# -- multi links: "is" means contains, any active child ---------------------------

def _m_any(ctx: Ctx, pred: Callable[[Any], ColumnElement[bool]] | None) -> ColumnElement[bool]:
    return ctx.engine.multi_exists(ctx.table, ctx.ft, pred)


@register((MultiEntityField,), "is")
def _m_is(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    v = values[0]
    if v is None:
        return not_(_m_any(ctx, None))
    return _m_any(ctx, lambda a: and_(a.c.child_type == v["type"], a.c.child_id == int(v["id"])))


@register((MultiEntityField,), "is_not")
def _m_is_not(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_m_is(ctx, values))


def _m_in_expr(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    links = [v for v in values if v is not None]
    parts = []
    if links:
        parts.append(_m_any(ctx, lambda a: or_(*[and_(a.c.child_type == v["type"], a.c.child_id == int(v["id"]))
                                                 for v in links])))
    if any(v is None for v in values):
        parts.append(not_(_m_any(ctx, None)))
    return or_(*parts) if parts else false()


@register((MultiEntityField,), "in")
def _m_in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return _m_in_expr(ctx, values)


@register((MultiEntityField,), "not_in")
def _m_not_in(ctx: Ctx, values: tuple[Any, ...]) -> ColumnElement[bool]:
    return not_(_m_in_expr(ctx, values))


def support_table() -> dict[str, dict[str, bool]]:
    """data_type -> relation -> answered locally? (for the docs)."""
    from ..schema import FieldSchema
    from .fields import field_type
    out: dict[str, dict[str, bool]] = {}
    for dt, rels in sorted(RELATIONS.items()):
        ft = field_type(FieldSchema("X", "f", dt))
        out[dt] = {rel: (type(ft), rel) in _REGISTRY for rel in sorted(rels)}
    return out


__all__ = ["Ctx", "builder_for", "support_table", "register", "true", "literal", "exists", "select"]
