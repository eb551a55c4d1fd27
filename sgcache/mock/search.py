"""`text_search` (RPC `query_display_name_cache`): display-name search over chosen types.

Every whitespace-separated term must occur in the display name (case-insensitive);
types come in the order the request lists them, ids ascending within a type. ``links``
names the record's ``entity`` (type and display name) when it has one, as the client's
docstring shows for Tasks.
"""

from __future__ import annotations

from typing import Any

from ..protocol import errors
from .query import Engine, fold

M = "query_display_name_cache"


def text_search(engine: Engine, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise errors.crud(M, "parameters must be an object")
    text = params.get("text")
    if not isinstance(text, str) or len(text.strip()) < 3:
        raise errors.crud(M, "text_search requires at least 3 characters of text")
    types = params.get("entity_types")
    if not isinstance(types, dict) or not types:
        raise errors.crud(M, "'entity_types' must be a non-empty object of type -> filters")
    projects = params.get("project_ids") or []
    if not isinstance(projects, list):
        raise errors.crud(M, "'project_ids' must be a list")
    limit = params.get("max_results")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise errors.crud(M, "'max_results' must be a positive integer")
    terms = text.lower().split()
    folded = [fold(t) for t in terms]
    matches: list[dict[str, Any]] = []
    store = engine.store
    for etype, filters in types.items():
        ids = engine.select(etype, filters, method=M).all()
        table = store.tables[etype]
        for i in ids:
            rec = table[i]
            name = engine.name_of(etype, i)
            if not isinstance(name, str) or not all(t in fold(name) for t in folded):
                continue
            project = rec.get("project")
            pid = project.get("id") if isinstance(project, dict) else None
            if projects and pid not in projects:
                continue
            image = rec.get("image")
            link = rec.get("entity")  # e.g. a Task's Shot: ["Shot", "bunny_010_0010"]
            links = [link["type"], engine.name_of(link["type"], link["id"]) or ""] \
                if isinstance(link, dict) and engine.live(link) else ["", ""]
            matches.append({"id": i, "type": etype, "name": name, "project_id": pid,
                            "image": engine.absolute(image) if isinstance(image, str) else None,
                            "links": links, "status": rec.get("sg_status_list")})
            if limit is not None and len(matches) >= limit:
                return {"matches": matches, "terms": terms}
    return {"matches": matches, "terms": terms}
