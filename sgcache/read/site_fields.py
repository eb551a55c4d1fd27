"""Whether the site lacks a field: what a local answer may render as null without asking.

Note threads and text search put fields in their answers whether or not a type has them
(a match's `image`, a user's `sg_status_list`): null where the type has no such field.
The cache's schema alone cannot tell "the site has no such field" from "the rules left
it out of the cache", so a field counts as absent on the site only when the schema was
taken from the site (not a schema file) and the recorded rules would have kept it: then
its absence is the site's. Anything else is unknown, and the caller passes through.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from ..schema import Schema

#: State key of how the schema was chosen (written by `runtime`, which sits above this layer).
SCHEMA_CHOICE_KEY = "schema_choice"


def _selected(rules: list[str], name: str) -> bool:
    """Whether `Type.field` passes the rules as `Schema.filtered` applies them (last match wins)."""
    selected = False
    for rule in rules:
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        include = not rule.startswith("!")
        pat = rule if include else rule[1:]
        if "." not in pat:
            pat += ".*"
        if fnmatch.fnmatchcase(name, pat):
            selected = include
    return selected


class SiteFields:
    """Answers "does the site lack `Type.field`?" from the cached schema and how it was chosen."""

    def __init__(self, schema: Schema, choice: Any) -> None:
        self.schema = schema
        self._from_site = isinstance(choice, dict) and choice.get("source") == "site"
        rules = choice.get("rules") if isinstance(choice, dict) else None
        self._rules = [str(r) for r in rules] if isinstance(rules, list) else None

    def lacks(self, etype: str, fname: str) -> bool:
        """True only when the site surely has no field `fname` on `etype` (a cached type)."""
        ent = self.schema.entities.get(etype)
        if ent is None or fname in ent.fields or not self._from_site:
            return False
        return self._rules is None or _selected(self._rules, f"{etype}.{fname}")
