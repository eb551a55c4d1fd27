"""Permission groups a shadow mismatch quarantined: every read of their callers goes to the site.

When a local answer to a caller of a permission group differs from the site's answer to
the same caller (and the event log does not explain it), the likeliest cause is that the
policy written for the group (`SGCACHE_PERMISSIONS`) disagrees with the site's rules: a
wrong policy shows rows to people the site hides them from, in every shape of read. The
cache cannot tell that from one wrong shape, so the whole group is passed through; other
groups keep their local answers.

Kept in `_sgcache_shadow` beside the shape quarantines (sgcache/store/quarantine.py): one
row per mismatch, its shape naming the group and the group's policy as configured then,
so every worker and host honours it, and `sgcache shadow report|clear` show and lift it.
A group's quarantine ends when
- an operator clears it (`sgcache shadow clear ID`, `--group CODE` or `--all`);
- the group's policy changes (it holds for the policy it was found under: correct the
  policy, restart, and the group is answered locally again);
- `SGCACHE_PERMISSIONS_QUARANTINE` seconds pass after its newest mismatch (0: never).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Connection

from ..protocol.values import format_datetime, parse_datetime, utcnow
from ..store import quarantine as q

#: The shape key naming the group (a mismatch of a request's shape never has it).
GROUP = "permission_group"


def group_shape(method: str, params: Mapping[str, Any], group: str, policy: Mapping[str, Any]) -> dict[str, Any]:
    """What a group's mismatch row records: the request's shape, the group, its policy then."""
    return {**q.shape_of(method, params), GROUP: group, "policy": dict(policy)}


@dataclass(frozen=True)
class GroupQuarantine:
    """One group passed through: since its newest mismatch `at`, until `until` (None: cleared by hand)."""

    group: str
    mismatch_id: int
    at: str
    until: str | None

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "mismatch_id": self.mismatch_id, "at": self.at, "until": self.until}


def _rows(conn: Connection, table: Table, group: str | None = None) -> list[tuple[int, str, dict[str, Any]]]:
    """Uncleared group mismatches: (id, at, shape)."""
    out = []
    for rid, at, shape in conn.execute(select(table.c.id, table.c.at, table.c.shape).where(
            table.c.cleared_at.is_(None), table.c.shape.contains(f'"{GROUP}"'))):
        try:
            s = json.loads(shape)
        except ValueError:
            continue
        if isinstance(s, dict) and isinstance(s.get(GROUP), str) and (group is None or s[GROUP] == group):
            out.append((int(rid), str(at), s))
    return out


def active(conn: Connection, table: Table, policy_of: Callable[[str], Mapping[str, Any]], ttl: float,
           now: _dt.datetime | None = None) -> dict[str, GroupQuarantine]:
    """Group -> its quarantine in force: rows found under the group's current policy, newer
    than `ttl` seconds (0: any age). Rows past `ttl` are marked cleared ("expired")."""
    now = now or utcnow()
    out: dict[str, GroupQuarantine] = {}
    expired = []
    for rid, at, shape in _rows(conn, table):
        g = shape[GROUP]
        if shape.get("policy") != dict(policy_of(g)):
            continue  # found under another policy: this one is not known to be wrong
        when = parse_datetime(at)
        until = when + _dt.timedelta(seconds=ttl) if when is not None and ttl > 0 else None
        if until is not None and until <= now:
            expired.append(rid)
            continue
        cur = out.get(g)
        if cur is None or rid > cur.mismatch_id:
            out[g] = GroupQuarantine(g, rid, at, format_datetime(until) if until is not None else None)
    if expired:
        conn.execute(update(table).where(table.c.id.in_(expired), table.c.cleared_at.is_(None))
                     .values(cleared_at=format_datetime(now), cleared_by="expired"))
    return out


def groups_of(conn: Connection, table: Table, ids: Iterable[int]) -> set[str]:
    """The groups these mismatch rows quarantined (clearing one row lifts its group)."""
    ids = list(ids)
    if not ids:
        return set()
    out = set()
    for shape in conn.execute(select(table.c.shape).where(table.c.id.in_(ids))).scalars():
        try:
            s = json.loads(shape)
        except ValueError:
            continue
        if isinstance(s, dict) and isinstance(s.get(GROUP), str):
            out.add(s[GROUP])
    return out


def clear_group(conn: Connection, table: Table, group: str, *, by: str) -> int:
    """Lift a group's quarantine (every uncleared mismatch row naming it). Returns the rows cleared."""
    ids = [rid for rid, _, _ in _rows(conn, table, group)]
    if not ids:
        return 0
    res = conn.execute(update(table).where(table.c.id.in_(ids), table.c.cleared_at.is_(None))
                       .values(cleared_at=format_datetime(utcnow()), cleared_by=by[:64]))
    return int(res.rowcount or 0)
