"""Building api3 request bodies for the bad-input and fuzz tests."""

from __future__ import annotations

from typing import Any

EMPTY = {"logical_operator": "and", "conditions": []}


def read(**params: Any) -> dict[str, Any]:
    """A read of Shot codes with `params` replacing the defaults."""
    return {"type": "Shot", "return_fields": ["code"], "filters": EMPTY, **params}


def cond(path: Any, relation: Any, *values: Any, **params: Any) -> dict[str, Any]:
    """A read with one filter condition."""
    return read(filters={"logical_operator": "and", "conditions": [
        {"path": path, "relation": relation, "values": list(values)}]}, **params)


def nested(depth: int) -> dict[str, Any]:
    """A read whose filter groups nest `depth` deep."""
    f: dict[str, Any] = dict(EMPTY)
    for _ in range(depth):
        f = {"logical_operator": "and", "conditions": [f]}
    return read(filters=f)
