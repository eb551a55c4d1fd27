"""`query_display_name_cache` (the client's `text_search`) answered from the store, or Passthrough.

What the site answers, as public sources describe it (the client's docstring and the
python-api tests' `TestTextSearch`; protocol.md §5.4): `terms` is the text lower-cased
and split on whitespace; `matches` holds the records of the requested types whose
display name contains every term (case-insensitively), honouring each type's filters,
`project_ids` and `max_results`, the types in the order the request lists them (a Shot
match before an Asset match when Shot is listed first), each match as
`{id, type, name, project_id, image, links, status}` with `image` null when the record
has no thumbnail and `links` the `[type, name]` of the record's `entity`, or `["", ""]`.
The mock site (the oracle of the differential tests) implements the same reading on its
own; within a type it lists ids ascending, and so does this module.

Answered locally only where every value is exact: the terms are matched with the read
engine's `contains` on the display-name field (full Unicode case folding, as the site
compares text); a match of a type with an `image` field goes to the site (the value is a
signed URL, or null, and the cache holds neither), so what is answered locally is a
search with no matches among such types; fields rendered null because the type lacks
them must be ones the site lacks (`site_fields`); everything the read engine or the read
gate would pass through (uncached or unprimed types and fields, filters it cannot
answer) passes the whole search through.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..store.field_types import EntityField, TextField
from .engine import ReadEngine
from .names import name_field
from .note_threads import Gate, read_all, site_fields, snapshot
from .passthrough import Passthrough
from .site_fields import SiteFields

METHOD = "query_display_name_cache"
#: Matches of one type answered locally at most (before `project_ids`; more go to the site).
MAX_MATCHES = 5000


def _params(params: Any) -> tuple[str, dict[str, Any], list[Any], int | None]:
    """text, entity_types, project_ids, max_results; Passthrough for what the site should judge."""
    if not isinstance(params, dict) or set(params) - {"text", "entity_types", "project_ids", "max_results"}:
        raise Passthrough(f"{METHOD}: unsupported params")
    text, types = params.get("text"), params.get("entity_types")
    projects, limit = params.get("project_ids") or [], params.get("max_results")
    if not isinstance(text, str) or len(text.strip()) < 3 or "\0" in text:
        raise Passthrough(f"{METHOD}: text the site refuses")
    if not isinstance(types, dict) or not types or not all(isinstance(f, dict) for f in types.values()):
        raise Passthrough(f"{METHOD}: entity_types the site decides on")
    if not isinstance(projects, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in projects):
        raise Passthrough(f"{METHOD}: project_ids the site decides on")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise Passthrough(f"{METHOD}: max_results the site decides on")
    return text, types, projects, limit


def text_search(reader: ReadEngine, conn: Connection, params: Any, *, gate: Gate = None) -> dict[str, Any]:
    """The search's answer as the site gives it, or Passthrough."""
    text, types, projects, limit = _params(params)
    conn = snapshot(reader, conn)
    site = site_fields(reader, conn)
    terms = text.lower().split()
    matches: list[dict[str, Any]] = []
    try:
        for etype, filters in types.items():
            for m in _search_type(reader, conn, gate, site, etype, filters, terms, projects):
                matches.append(m)
                if limit is not None and len(matches) >= limit:
                    return {"matches": matches, "terms": terms}
    except errors.Fault as f:  # a request the engine finds invalid: the site's Fault is authoritative
        raise Passthrough(f"{METHOD}: invalid request, site decides: {f.message}") from None
    return {"matches": matches, "terms": terms}


def _optional(reader: ReadEngine, site: SiteFields, etype: str, fname: str) -> bool:
    """Whether to read `fname` (the type has it) or render null (the site lacks it)."""
    if fname in reader.schema.entities[etype].fields:
        return True
    if site.lacks(etype, fname):
        return False
    raise Passthrough(f"{METHOD}: {etype}.{fname} is not in the cached schema")


def _search_type(reader: ReadEngine, conn: Connection, gate: Gate, site: SiteFields, etype: str,
                 filters: dict[str, Any], terms: list[str], projects: list[int]) -> list[dict[str, Any]]:
    if not isinstance(etype, str) or etype not in reader.store:
        raise Passthrough(f"uncached entity type {etype!r} in {METHOD}")
    table = reader.store[etype]
    nf = name_field(reader.schema.entities[etype], etype)
    if nf is None or not isinstance(table.fields.get(nf), TextField):
        raise Passthrough(f"{METHOD}: {etype} has no cached text display name")
    has_image = _optional(reader, site, etype, "image")
    has_status = _optional(reader, site, etype, "sg_status_list")
    has_project = _optional(reader, site, etype, "project")
    has_entity = _optional(reader, site, etype, "entity")
    if has_project and not isinstance(table.fields.get("project"), EntityField):
        raise Passthrough(f"{METHOD}: {etype}.project is not a cached single link")
    entity_ft = table.fields.get("entity") if has_entity else None
    if has_entity and reader.schema.entities[etype].fields["entity"].data_type == "entity" \
            and not isinstance(entity_ft, EntityField):
        raise Passthrough(f"{METHOD}: {etype}.entity is not cached")
    single_entity = isinstance(entity_ft, EntityField)  # a multi-entity `entity` shows no link

    wanted = {"logical_operator": "and", "conditions": [filters] + [
        {"path": nf, "relation": "contains", "values": [t]} for t in terms]}
    fields = [nf] + (["sg_status_list"] if has_status else []) + (["entity"] if single_entity else [])
    found = read_all(reader, conn, gate, etype, wanted, fields, cap=MAX_MATCHES)
    pids = _project_ids(conn, reader, etype, [e["id"] for e in found]) if has_project and found else {}
    out = []
    for e in found:
        pid = pids.get(e["id"])
        if projects and pid not in projects:
            continue
        if has_image:
            raise Passthrough(f"{METHOD}: a {etype} match carries an image the cache does not hold")
        link = e.get("entity") if single_entity else None
        out.append({"id": e["id"], "type": etype, "name": e[nf], "project_id": pid, "image": None,
                    "links": [link["type"], link.get("name") or ""] if isinstance(link, dict) else ["", ""],
                    "status": e.get("sg_status_list")})
    return out


def _project_ids(conn: Connection, reader: ReadEngine, etype: str, ids: list[int]) -> dict[int, int | None]:
    """Each record's stored project id, a retired project's included (as the site reports it)."""
    t = reader.store[etype].table
    out: dict[int, int | None] = {}
    for i in range(0, len(ids), 1000):
        rows = conn.execute(select(t.c.id, t.c["project__type"], t.c["project__id"])
                            .where(t.c.id.in_(ids[i:i + 1000]))).all()
        out.update({r[0]: r[2] if r[1] == "Project" else None for r in rows})
    return out
