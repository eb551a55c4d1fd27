"""`additional_filter_presets` on `read`: the site's named filters, ANDed with the request's.

A preset narrows the set the request's own filters select, so each is evaluated here
after those filters and handed to the engine as an ``id in [...]`` condition; paging,
sorting and rendering stay the engine's. Implemented (as the python-api reference
lists them):

* ``Version`` + ``LATEST`` ``latest_by: ENTITIES_CREATED_AT``: of the matching
  Versions, the last created (``created_at``, then id) per ``entity``; Versions
  without an entity form one group.
* ``Version`` + ``LATEST`` ``latest_by: BY_PIPELINE_STEP_NUMBER_AND_ENTITIES_CREATED_AT``:
  per ``entity``, the Versions whose ``sg_task.Task.step`` has the highest
  ``list_order`` (no task or step counts lowest), then the last created of those.
* ``Version`` + ``CUT_SHOT_VERSIONS`` ``cut_id: N``: Versions whose ``entity`` is a
  Shot named by a CutItem of Cut N (``CutItem.cut`` / ``CutItem.shot``).
* ``Cut`` + ``LATEST`` ``latest_by: REVISION_NUMBER``: per ``code`` (case-insensitive),
  the matching Cut with the highest ``revision_number``.

Anything else (an empty dict, a non-list, an unknown preset or parameter value, a
preset on another type, two ``LATEST`` presets, a schema without the fields a preset
needs) is refused with a Fault, as the site does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import errors
from .query import Engine, fold

M = "read"
LATEST_BY = {
    "Version": ("ENTITIES_CREATED_AT", "BY_PIPELINE_STEP_NUMBER_AND_ENTITIES_CREATED_AT"),
    "Cut": ("REVISION_NUMBER",),
}


def _fault(detail: str) -> errors.Fault:
    return errors.crud(M, f"additional_filter_presets: {detail}")


def validate(entity_type: str, presets: Any) -> list[dict[str, Any]]:
    """The presets of a request, checked as the site checks them."""
    if not isinstance(presets, list) or not all(isinstance(p, dict) for p in presets):
        raise _fault("must be a list of objects")
    latest = 0
    for p in presets:
        name = p.get("preset_name")
        if not name:
            raise _fault("'preset_name' missing")
        if name == "LATEST":
            latest += 1
            allowed = LATEST_BY.get(entity_type)
            if allowed is None:
                raise _fault(f"preset 'LATEST' is not available for entity type '{entity_type}'")
            if p.get("latest_by") not in allowed:
                raise _fault(f"invalid 'latest_by' {p.get('latest_by')!r} for '{entity_type}'; "
                             f"expected one of {', '.join(allowed)}")
        elif name == "CUT_SHOT_VERSIONS":
            if entity_type != "Version":
                raise _fault(f"preset 'CUT_SHOT_VERSIONS' is not available for entity type '{entity_type}'")
            cut = p.get("cut_id")
            if not isinstance(cut, int) or isinstance(cut, bool):
                raise _fault("'cut_id' must be a Cut id")
        else:
            raise _fault(f"unknown preset '{name}'")
    if latest > 1:
        raise _fault("only one 'LATEST' preset may be given")
    return presets


def apply(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """The read params with their presets turned into an id condition (unchanged if none)."""
    presets = params.get("additional_filter_presets")
    if presets is None:
        return params
    etype = params.get("type")
    if not isinstance(etype, str) or etype not in engine.store.schema:
        raise errors.unknown_entity_type(M, etype)
    validate(etype, presets)
    return_only = params.get("return_only", "active") or "active"
    include_archived = params.get("include_archived_projects", True)
    ids = engine.select(etype, params.get("filters"), None, return_only,
                        include_archived if isinstance(include_archived, bool) else True, M).all()
    for p in presets:
        ids = _PRESETS[(p["preset_name"], p.get("latest_by"))](engine, etype, ids, p)
    rest = {k: v for k, v in params.items() if k != "additional_filter_presets"}
    rest["filters"] = {"logical_operator": "and", "conditions": [
        {"path": "id", "relation": "in", "values": sorted(ids) or [0]}]}
    return rest


def _need(engine: Engine, etype: str, *fields: str) -> None:
    for f in fields:
        if etype not in engine.store.schema or not engine.store.schema.get_field(etype, f):
            raise _fault(f"this site has no {etype}.{f}, which the preset needs")


def _link_key(v: Any) -> Any:
    return (v.get("type"), v.get("id")) if isinstance(v, dict) else None


def _latest_per(engine: Engine, etype: str, ids: list[int], group: Callable[[dict[str, Any]], Any],
                rank: Callable[[dict[str, Any]], Any]) -> list[int]:
    table = engine.store.tables[etype]
    best: dict[Any, tuple[Any, int]] = {}
    for i in ids:
        rec = table[i]
        key = group(rec)
        r = (rank(rec), i)
        if key not in best or r > best[key]:
            best[key] = r
    return [i for _, i in best.values()]


def _latest_created(engine: Engine, etype: str, ids: list[int], p: dict[str, Any]) -> list[int]:
    _need(engine, etype, "entity", "created_at")
    return _latest_per(engine, etype, ids, lambda r: _link_key(r.get("entity")),
                       lambda r: r.get("created_at") or "")


def _latest_by_step(engine: Engine, etype: str, ids: list[int], p: dict[str, Any]) -> list[int]:
    _need(engine, etype, "entity", "created_at", "sg_task")
    _need(engine, "Task", "step")
    _need(engine, "Step", "list_order")
    store = engine.store

    def step_order(rec: dict[str, Any]) -> float:
        task = store.get_active("Task", (rec.get("sg_task") or {}).get("id"))
        step_link = task.get("step") if task else None
        step = store.get_active("Step", step_link.get("id")) if isinstance(step_link, dict) else None
        order = step.get("list_order") if step else None
        return float(order) if isinstance(order, (int, float)) else float("-inf")
    return _latest_per(engine, etype, ids, lambda r: _link_key(r.get("entity")),
                       lambda r: (step_order(r), r.get("created_at") or ""))


def _latest_revision(engine: Engine, etype: str, ids: list[int], p: dict[str, Any]) -> list[int]:
    _need(engine, etype, "code", "revision_number")
    return _latest_per(engine, etype, ids, lambda r: fold(r.get("code")),
                       lambda r: r.get("revision_number") if isinstance(r.get("revision_number"), int) else -1)


def _cut_shot_versions(engine: Engine, etype: str, ids: list[int], p: dict[str, Any]) -> list[int]:
    _need(engine, "CutItem", "cut", "shot")
    _need(engine, etype, "entity")
    store = engine.store
    cut_id = p["cut_id"]
    shots = set()
    for i in store.ids("CutItem"):
        item = store.tables["CutItem"][i]
        cut, shot = item.get("cut"), item.get("shot")
        if isinstance(cut, dict) and cut.get("id") == cut_id and engine.live(shot):
            shots.add(shot["id"])
    table = store.tables[etype]
    return [i for i in ids if isinstance(table[i].get("entity"), dict)
            and table[i]["entity"].get("type") == "Shot" and table[i]["entity"].get("id") in shots]


_PRESETS: dict[tuple[str, Any], Callable[[Engine, str, list[int], dict[str, Any]], list[int]]] = {
    ("LATEST", "ENTITIES_CREATED_AT"): _latest_created,
    ("LATEST", "BY_PIPELINE_STEP_NUMBER_AND_ENTITIES_CREATED_AT"): _latest_by_step,
    ("LATEST", "REVISION_NUMBER"): _latest_revision,
    ("CUT_SHOT_VERSIONS", None): _cut_shot_versions,
}
