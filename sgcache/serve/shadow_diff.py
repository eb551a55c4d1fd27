"""What differs between the cache's answer and the site's, as the client would see them.

Pure functions over decoded api3 results (no I/O), so the comparison reads and tests on
its own: `compare` gives entity ids and field names, never values, and `event_names` /
`linked_entities` list the entities an event or a value names, for deciding lag in `shadow.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class Diff:
    """How two answers differ: entity ids and field names, never values."""

    fields: dict[int, list[str]] = field(default_factory=dict)
    only_cache: list[int] = field(default_factory=list)
    only_site: list[int] = field(default_factory=list)
    order: bool = False
    other: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.only_cache or self.only_site or self.order or self.other)

    def ids(self) -> set[int]:
        return set(self.fields) | set(self.only_cache) | set(self.only_site)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.fields:
            out["fields"] = {str(i): f for i, f in sorted(self.fields.items())}
        for k in ("only_cache", "only_site", "other"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        if self.order:
            out["order"] = True
        return out

    def short(self, n: int = 8) -> str:
        parts = [f"{i}: {','.join(f)}" for i, f in sorted(self.fields.items())[:n]]
        if len(self.fields) > n:
            parts.append(f"+{len(self.fields) - n} more")
        if self.only_cache:
            parts.append(f"only in the cache: {self.only_cache[:n]}")
        if self.only_site:
            parts.append(f"only on the site: {self.only_site[:n]}")
        if self.order:
            parts.append("order differs")
        parts += self.other[:n]
        return "; ".join(parts)


# -- comparing ------------------------------------------------------------------------------

def compare(method: str, cache: Any, site: Any) -> Diff:
    """How the cache's `results` differ from the site's, as the client decodes them.

    Entities are compared in full and in order; of `paging_info`, the keys both sent (the
    client reads `has_next_page` and counts; the site may add keys the cache does not).
    """
    d = Diff()
    if cache == site:
        return d
    if method == "note_thread_contents":
        return Diff(other=_listed(cache, site))
    if method == "query_display_name_cache":
        cm, sm = get(cache, "matches"), get(site, "matches")
        return Diff(other=_listed(cm, sm) + (["terms"] if get(cache, "terms") != get(site, "terms") else []))
    if method == "summarize":
        cs, ss = get(cache, "summaries"), get(site, "summaries")
        if isinstance(cs, dict) and isinstance(ss, dict):
            d.other += [f"summaries.{k}" for k in sorted(set(cs) | set(ss), key=str) if cs.get(k) != ss.get(k)]
        elif cs != ss:
            d.other.append("summaries")
        cg, sg = get(cache, "groups"), get(site, "groups")
        if cg != sg:
            n = len(cg) if isinstance(cg, list) else 0
            m = len(sg) if isinstance(sg, list) else 0
            d.other.append(f"groups ({n} in the cache, {m} on the site)")
        return d
    ce, se = get(cache, "entities"), get(site, "entities")
    if not (isinstance(ce, list) and isinstance(se, list)):
        return Diff(other=["results"])
    cby, sby = by_id(ce), by_id(se)
    if cby is None or sby is None:
        return Diff(other=["entities"])
    for i, c in cby.items():
        s = sby.get(i)
        if s is None:
            d.only_cache.append(i)
        elif c != s:
            d.fields[i] = sorted(str(k) for k in set(c) | set(s) if c.get(k) != s.get(k))
    d.only_site = [i for i in sby if i not in cby]
    common = [i for i in cby if i in sby]
    d.order = common != [i for i in sby if i in cby]
    cp, sp = get(cache, "paging_info"), get(site, "paging_info")
    if isinstance(cp, dict) and isinstance(sp, dict):  # keys both sent: the site may send more
        d.other += [f"paging_info.{k}" for k in sorted(set(cp) & set(sp)) if cp[k] != sp[k]]
    return d


def _listed(cache: Any, site: Any) -> list[str]:
    """How two lists of records of several types differ (a note thread, a search's matches):
    `Type id: fields`, `only in the cache: Type id`, `order`; never values."""
    def keyed(v: Any) -> dict[tuple[str, int], dict[str, Any]] | None:
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for e in v if isinstance(v, list) else [None]:
            if not isinstance(e, dict) or not isinstance(e.get("id"), int):
                return None
            out[(str(e.get("type")), e["id"])] = e
        return out
    if cache == site:
        return []
    ck, sk = keyed(cache), keyed(site)
    if ck is None or sk is None:
        return ["results"]
    out = [f"{t} {i}: {','.join(sorted(str(k) for k in set(c) | set(sk[t, i]) if c.get(k) != sk[t, i].get(k)))}"
           for (t, i), c in ck.items() if (t, i) in sk and c != sk[t, i]]
    out += [f"only in the cache: {t} {i}" for t, i in ck if (t, i) not in sk]
    out += [f"only on the site: {t} {i}" for t, i in sk if (t, i) not in ck]
    if [k for k in ck if k in sk] != [k for k in sk if k in ck]:
        out.append("order differs")
    return out or ["results"]


def get(v: Any, key: str) -> Any:
    return v.get(key) if isinstance(v, dict) else None


def by_id(entities: list[Any]) -> dict[int, dict[str, Any]] | None:
    out: dict[int, dict[str, Any]] = {}
    for e in entities:
        if not isinstance(e, dict) or not isinstance(e.get("id"), int):
            return None
        out[e["id"]] = e
    return out


def linked_entities(value: Any, out: set[tuple[str, int]]) -> None:
    """Every `{type, id}` inside a value (entity and multi-entity fields)."""
    if isinstance(value, dict):
        if isinstance(value.get("type"), str) and isinstance(value.get("id"), int):
            out.add((value["type"], value["id"]))
        for v in value.values():
            if isinstance(v, (dict, list)):
                linked_entities(v, out)
    elif isinstance(value, list):
        for v in value:
            linked_entities(v, out)


def event_names(ev: Mapping[str, Any], entities: set[tuple[str, int]]) -> None:
    """The entities an event names: its subject (trap 1: from meta) and linked values."""
    meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
    ent = ev.get("entity") if isinstance(ev.get("entity"), dict) else {}
    etype = meta.get("entity_type") or ent.get("type")
    eid = meta.get("entity_id") or ent.get("id")
    if isinstance(etype, str) and isinstance(eid, int):
        entities.add((etype, eid))
    for k in ("added", "removed", "new_value", "old_value"):
        if k in meta:
            linked_entities(meta[k], entities)
