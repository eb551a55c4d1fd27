"""Hypothesis strategies for random api3 `read` and `summarize` requests over a schema.

Values are drawn from what the site actually holds (so filters match something), mixed
with edge cases: None, empty strings, case and Unicode variants, out-of-range numbers,
links to missing or retired entities, and now and then a malformed request (the cache
must give the site's Fault).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sgcache.mock.filters import RELATIONS, TIME_UNITS, TYPES_OF

from .world import UNREADABLE, World

ODD_TEXT = ["", "a", "A", "é", "É", "ß", "SS", "ss", "straße", "STRASSE", "İ", "i̇", "ı", "%", "_", "x_y%z",
            "0", "sh", "SH0", "日本", "👍", " ", "'", "\\", "Ω", "ω", "ﬁ", "fi",
            "\0"]  # SQLite's LIKE stopped at NUL (issue 11, finding 7; more in test_text_nul.py)
FILTER_SKIP = {"pivot_column", "summary", "calculated", "query"}


def _case_variants(s: str) -> list[str]:
    out = [s, s.upper(), s.lower(), s.swapcase(), s.casefold()]
    if len(s) > 2:
        out += [s[1:], s[:-1], s[1:-1], s[: len(s) // 2]]
    return out


def rare(draw: Any, n: int) -> bool:
    """True about once in n draws (Hypothesis favours boundary integers, so not integers(0, n))."""
    return draw(st.sampled_from([False] * (n // 2) + [True] + [False] * (n - n // 2)))


class Gen:
    """Strategies bound to one world (schema + value pools)."""

    def __init__(self, world: World, types: list[str], max_depth: int = 2) -> None:
        self.w = world
        self.schema = world.schema
        self.types = types
        self.max_depth = max_depth

    # -- paths --------------------------------------------------------------------
    def field_names(self, etype: str, filterable: bool = False) -> list[str]:
        fs = self.schema[etype].fields
        return sorted(f for f, d in fs.items() if not (filterable and d.data_type in FILTER_SKIP))

    @st.composite
    def path(draw: Any, self: "Gen", etype: str, depth: int = 0, through_multi: bool = True) -> tuple[str, str, Any]:
        """(path text, leaf type, leaf FieldSchema)."""
        ent = self.schema[etype]
        links = [f for f, d in ent.fields.items() if d.data_type in ("entity", "multi_entity", "addressing")
                 and d.valid_types and (through_multi or d.data_type == "entity")]
        if depth < self.max_depth and links and draw(st.integers(0, 3)) == 0:
            f = draw(st.sampled_from(sorted(links)))
            fs = ent.fields[f]
            tgt = draw(st.sampled_from([t for t in fs.valid_types if t in self.schema] or ["Shot"]))
            if tgt in self.schema:
                rest, leaf_t, leaf_fs = draw(self.path(tgt, depth + 1, through_multi))
                return f"{f}.{tgt}.{rest}", leaf_t, leaf_fs
        f = draw(st.sampled_from(self.field_names(etype)))
        return f, etype, ent.fields[f]

    # -- values -------------------------------------------------------------------
    def pool(self, etype: str, fname: str) -> list[Any]:
        return self.w.pools.get(etype, {}).get(fname, [])

    @st.composite
    def value(draw: Any, self: "Gen", etype: str, fs: Any, for_text: bool = False) -> Any:
        dt = fs.data_type
        pool = self.pool(etype, fs.name)
        if dt in ("entity", "multi_entity", "addressing"):
            choices: list[Any] = [p for p in pool if isinstance(p, dict)]
            extra = [{"type": t, "id": i} for t in fs.valid_types for i in self.w.ids.get(t, [])[:40]]
            extra += [{"type": t, "id": 999999} for t in fs.valid_types[:1]]
            link = draw(st.sampled_from(choices + extra) if choices + extra else st.none())
            if link is None:
                return None
            link = {"type": link["type"], "id": link["id"]}
            if draw(st.booleans()):
                link["name"] = "ignored"
            return link
        if dt == "tag_list":
            tags = [p for p in pool if isinstance(p, str)] + ["nope"]
            t = draw(st.sampled_from(tags))
            return draw(st.sampled_from(_case_variants(t)))
        base: list[Any] = list(pool)
        if dt in ("text", "list", "status_list", "entity_type", "color", "uuid", "footage"):
            s = draw(st.sampled_from(base + ODD_TEXT) if base else st.sampled_from(ODD_TEXT))
            if not isinstance(s, str):
                return s
            return draw(st.sampled_from(_case_variants(s) if (for_text or draw(st.booleans())) else [s]))
        if dt in ("number", "duration", "percent", "timecode"):
            nums = [p for p in base if isinstance(p, int)]
            n = draw(st.sampled_from(nums) if nums else st.integers(-10, 2000))
            return n + draw(st.sampled_from([0, 0, 0, 1, -1, 10]))
        if dt in ("float", "currency"):
            nums = [p for p in base if isinstance(p, (int, float))]
            return draw(st.sampled_from(nums) if nums else st.sampled_from([0.0, 1.5, 24.0, -2.0]))
        if dt == "checkbox":
            return draw(st.booleans())
        if dt == "date":
            return draw(st.sampled_from(base + ["2024-01-01", "2025-06-15", "1969-12-31", "2030-01-01"]))
        if dt == "date_time":
            return draw(st.sampled_from(base + ["2024-01-01T00:00:00Z", "2025-06-15T12:30:00Z",
                                               "2030-01-01T00:00:00Z"]))
        if dt == "image":
            return None
        return draw(st.sampled_from(base)) if base else None

    # -- conditions and groups ----------------------------------------------------
    @st.composite
    def condition(draw: Any, self: "Gen", etype: str) -> dict[str, Any]:
        text, leaf_t, fs = draw(self.path(etype))
        if not RELATIONS.get(fs.data_type) and not rare(draw, 4):  # mostly filterable fields
            f = draw(st.sampled_from([f for f, d in self.schema[etype].fields.items() if RELATIONS.get(d.data_type)]))
            text, leaf_t, fs = f, etype, self.schema[etype].fields[f]
        dt = fs.data_type
        rels = sorted(RELATIONS.get(dt, ()))
        if not rels or rare(draw, 40):  # now and then an invalid relation
            rel = draw(st.sampled_from(sorted(TYPES_OF) + ["bogus"]))
        else:
            rel = draw(st.sampled_from(rels))
        vals = draw(self.values_for(leaf_t, fs, rel))
        cond = {"path": text, "relation": rel, "values": vals}
        if rare(draw, 60):  # malformed shapes
            cond = draw(st.sampled_from([{"path": text}, {"relation": rel, "values": vals},
                                         {"path": text, "relation": rel, "values": vals + vals + [1]},
                                         [text, rel], "junk"]))
        return cond

    @st.composite
    def values_for(draw: Any, self: "Gen", etype: str, fs: Any, rel: str) -> list[Any]:
        def v(**kw: Any) -> Any:
            return draw(self.value(etype, fs, **kw))

        def maybe_none(x: Any) -> Any:
            return None if rare(draw, 6) else x
        if rel in ("is", "is_not"):
            return [maybe_none(v())]
        if rel in ("in", "not_in"):
            return [maybe_none(v()) for _ in range(draw(st.integers(1, 3)))]
        if rel in ("less_than", "greater_than"):
            return [v()]
        if rel in ("between", "not_between"):
            return [maybe_none(v()), maybe_none(v())]
        if rel in ("contains", "not_contains", "starts_with", "ends_with"):
            if fs.data_type in ("addressing",):
                return [draw(self.name_text(fs))]
            return [draw(self.value(etype, fs, for_text=True)) if fs.data_type == "text" else draw(
                st.sampled_from(ODD_TEXT))]
        if rel.startswith("name_"):
            return [draw(self.name_text(fs))]
        if rel in ("type_is", "type_is_not"):
            return [draw(st.sampled_from(list(fs.valid_types) + ["Shot", "Bogus", None]))]
        if rel in ("in_last", "not_in_last", "in_next", "not_in_next"):
            return [draw(st.integers(0, 400)), draw(st.sampled_from(sorted(TIME_UNITS)))]
        if rel.startswith("in_calendar"):
            return [draw(st.integers(-3, 3))]
        return [v()]

    @st.composite
    def name_text(draw: Any, self: "Gen", fs: Any) -> str:
        """Text for name_* relations: a piece of a linked entity's display name, or a tag."""
        from sgcache.mock.names import display_field
        names: list[str] = []
        if fs.data_type == "tag_list":
            names = [t for t in self.pool(fs.entity_type, fs.name) if isinstance(t, str)]
        for t in fs.valid_types:
            if t in self.schema and fs.data_type != "tag_list":
                nf = display_field(t, self.schema[t])
                if nf:
                    names += [n for n in self.pool(t, nf)[:30] if isinstance(n, str)]
        s = draw(st.sampled_from(names + ODD_TEXT))
        return draw(st.sampled_from(_case_variants(s)))

    @st.composite
    def group(draw: Any, self: "Gen", etype: str, depth: int = 0) -> dict[str, Any]:
        n = draw(st.integers(0, 3 if depth == 0 else 2))
        conds: list[Any] = []
        for _ in range(n):
            if depth < 2 and draw(st.integers(0, 4)) == 0:
                conds.append(draw(self.group(etype, depth + 1)))
            else:
                conds.append(draw(self.condition(etype)))
        op = draw(st.sampled_from(["and", "or"]))
        return {"logical_operator": op, "conditions": conds}

    # -- whole requests -------------------------------------------------------------
    @st.composite
    def read(draw: Any, self: "Gen") -> dict[str, Any]:
        etype = draw(st.sampled_from(self.types))
        params: dict[str, Any] = {"type": etype, "filters": draw(self.group(etype))}
        rf = [draw(self.path(etype))[0] for _ in range(draw(st.integers(0, 4)))]
        if draw(st.integers(0, 10)) > 0:
            params["return_fields"] = rf
        if draw(st.integers(0, 2)) == 0:
            params["sorts"] = [{"field_name": draw(self.path(etype))[0],
                                "direction": draw(st.sampled_from(["asc", "desc"]))}
                               for _ in range(draw(st.integers(1, 3)))]
        if draw(st.booleans()):
            params["paging"] = {"entities_per_page": draw(st.sampled_from([1, 2, 3, 5, 10, 50, 500])),
                                "current_page": draw(st.sampled_from([1, 1, 2, 3, 7]))}
        proto = draw(st.integers(0, 3))
        if proto == 1:
            params["return_paging_info_without_counts"] = draw(st.booleans())
        elif proto == 2:
            params["return_paging_info"] = draw(st.booleans())
        if draw(st.integers(0, 4)) == 0:
            params["return_only"] = draw(st.sampled_from(["active", "retired"]))
        if draw(st.integers(0, 3)) == 0:
            params["include_archived_projects"] = draw(st.booleans())
        if draw(st.booleans()):
            params["api_return_image_urls"] = True
        return params

    @st.composite
    def summary_path(draw: Any, self: "Gen", etype: str) -> str:
        """Mostly fields whose values can be summarized; now and then anything."""
        text, _t, fs = draw(self.path(etype, through_multi=False))
        if fs.data_type in UNREADABLE | {"url", "serializable"} and not rare(draw, 4):
            ok = [f for f, d in self.schema[etype].fields.items()
                  if d.data_type not in UNREADABLE | {"url", "serializable"}]
            text = draw(st.sampled_from(sorted(ok)))
        return text

    @st.composite
    def summarize(draw: Any, self: "Gen") -> dict[str, Any]:
        from sgcache.mock.summarize import GROUP_TYPES, SUMMARY_TYPES
        etype = draw(st.sampled_from(self.types))
        summaries = []
        for _ in range(draw(st.integers(1, 3))):
            f = draw(self.summary_path(etype))
            s: dict[str, Any] = {"field": f, "type": draw(st.sampled_from(SUMMARY_TYPES))}
            if s["type"] in ("percentage", "status_percentage") and draw(st.booleans()):
                s["value"] = draw(st.sampled_from(["fin", "ip", "IP", "wtg", "act", "x"]))
            summaries.append(s)
        params: dict[str, Any] = {"type": etype, "summaries": summaries, "filters": draw(self.group(etype))}
        if draw(st.booleans()):
            params["grouping"] = [{"field": draw(self.summary_path(etype)),
                                   "type": draw(st.sampled_from(GROUP_TYPES)),
                                   "direction": draw(st.sampled_from(["asc", "desc"]))}
                                  for _ in range(draw(st.integers(1, 2)))]
        if draw(st.integers(0, 3)) == 0:
            params["include_archived_projects"] = False
        return params
