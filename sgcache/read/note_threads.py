"""`note_thread_contents` (the client's `note_thread_read`) answered from the store, or Passthrough.

What the site answers, as public sources describe it (the client's docstring, and the
python-api test suite's `TestNoteThreadRead`, which compares each item with a `find_one`
of the same fields and strips the `image` the site adds to each reply's `user`): the
Note, then its Replies and Attachments in creation order; default keys per type (Note:
content, created_at, created_by; Reply: content, created_at, user; Attachment:
created_at, created_by) plus `entity_fields` rendered as `read` renders them;
`created_at` as `YYYY-MM-DD HH:MM:SS UTC`; users as `{type, id, name, status, valid}`,
a reply's user with its `image` too. The mock site (the oracle of the differential
tests) implements the same reading on its own.

Answered locally only where every value is exact:
- a reply's user carries a signed image URL, which the cache never holds: a thread with
  a reply whose user type has an `image` field goes to the site (script users, whose
  type has none on the site, are answered);
- items are ordered by `created_at` (whole seconds), then by creation. Within one type
  ids are handed out in creation order, so ties of one type go by id; a tie between a
  Reply and an Attachment goes to the site, which alone knows which came first;
- every type, field and link involved is cached and primed (the read engine and the
  read gate decide, as for `read`); a field rendered as null because the type lacks it
  must be one the site lacks (`site_fields`); the Note must be in the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol import errors
from .engine import MAX_PAGE, ReadEngine
from .names import name_field
from .passthrough import Passthrough
from .site_fields import SCHEMA_CHOICE_KEY, SiteFields

METHOD = "note_thread_contents"
DEFAULTS: dict[str, tuple[str, ...]] = {"Note": ("content", "created_at", "created_by"),
                                        "Reply": ("content", "created_at", "user"),
                                        "Attachment": ("created_at", "created_by")}
#: Items of one thread answered locally at most (a longer thread goes to the site).
MAX_ITEMS = 2000

Gate = Callable[[dict[str, Any]], None] | None
Link = tuple[str, int]


def stamp(value: Any) -> Any:
    """A wire datetime `2015-07-14T21:33:28Z` as threads show it: `2015-07-14 21:33:28 UTC`."""
    if isinstance(value, str) and len(value) == 20 and value[10] == "T" and value.endswith("Z"):
        return f"{value[:10]} {value[11:19]} UTC"
    return value


def snapshot(reader: ReadEngine, conn: Connection) -> Connection:
    """`conn` reading one snapshot across its statements (the answer is several reads).

    Otherwise a sync write between two of them could split the answer: PostgreSQL's
    default (read committed) takes a snapshot per statement, and Python's sqlite3 opens
    no transaction for a SELECT. Call it on a fresh connection, before any statement."""
    if conn.in_transaction():
        return conn
    if reader.store.dialect == "postgresql":  # for this transaction only: nothing to reset after
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    elif reader.store.dialect == "sqlite":
        conn.exec_driver_sql("BEGIN")  # deferred: the first read takes the snapshot
    return conn


def by_ids(ids: list[int]) -> dict[str, Any]:
    return {"logical_operator": "and", "conditions": [{"path": "id", "relation": "in", "values": ids or [0]}]}


def read_ids(reader: ReadEngine, conn: Connection, gate: Gate, etype: str, ids: list[int],
             fields: list[str]) -> list[dict[str, Any]]:
    """These entities (active ones), or with no ids only the checks a read makes (the site
    refuses a bad field even where there is nothing to show), without a query."""
    if ids:
        return read_all(reader, conn, gate, etype, by_ids(ids), fields)
    params = {"type": etype, "return_fields": fields, "filters": {"logical_operator": "and", "conditions": [
        {"path": "id", "relation": "is", "values": [0]}]}}
    if gate is not None:
        gate(params)
    reader.point(params, conn.dialect)  # validates and plans: Passthrough where `read` would
    return []


_site_fields: WeakKeyDictionary[ReadEngine, SiteFields] = WeakKeyDictionary()


def site_fields(reader: ReadEngine, conn: Connection) -> SiteFields:
    """What the site lacks, per engine (a schema change makes a new engine)."""
    site = _site_fields.get(reader)
    if site is None:
        site = _site_fields[reader] = SiteFields(reader.schema, reader.store.get_state(conn, SCHEMA_CHOICE_KEY))
    return site


def read_all(reader: ReadEngine, conn: Connection, gate: Gate, etype: str, filters: dict[str, Any],
             fields: list[str], *, retired: bool = False, cap: int = MAX_ITEMS) -> list[dict[str, Any]]:
    """Every entity a read matches (pages of MAX_PAGE), in id order; Passthrough past `cap`."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        params = {"type": etype, "filters": filters, "return_fields": fields,
                  "return_only": "retired" if retired else "active",
                  "paging": {"entities_per_page": MAX_PAGE, "current_page": page}}
        if gate is not None:
            gate(params)  # unprimed or rebuilding types: Passthrough
        res = reader.read(conn, params)
        out.extend(res["entities"])
        if len(out) > cap:
            raise Passthrough(f"more than {cap} {etype} entities in one answer")
        if not res["paging_info"].get("has_next_page"):
            return out
        page += 1


class Users:
    """Users as threads show them, looked up once per thread."""

    def __init__(self, reader: ReadEngine, conn: Connection, gate: Gate, site: SiteFields) -> None:
        self.reader, self.conn, self.gate, self.site = reader, conn, gate, site
        self._seen: dict[Link, dict[str, Any] | None] = {}
        self._imaged: set[Link] = set()

    def load(self, links: set[Link], *, with_image: bool) -> None:
        by_type: dict[str, list[int]] = {}
        for t, i in links:
            if with_image and not self.site.lacks(t, "image"):
                raise Passthrough(f"{METHOD}: a reply's {t} carries an image URL the cache does not hold")
            if (t, i) not in self._seen:
                by_type.setdefault(t, []).append(i)
        for etype, ids in by_type.items():
            if etype not in self.reader.store:
                raise Passthrough(f"{METHOD}: user type {etype} is not cached")
            fields = self.reader.schema.entities[etype].fields
            if "sg_status_list" not in fields and not self.site.lacks(etype, "sg_status_list"):
                raise Passthrough(f"{METHOD}: {etype}.sg_status_list is not in the cached schema")
            nf = name_field(self.reader.schema.entities.get(etype), etype)
            want = [f for f in (nf, "sg_status_list") if f is not None and f in fields]
            found = {e["id"]: e for e in read_ids(self.reader, self.conn, self.gate, etype, ids, want)}
            missing = [i for i in ids if i not in found]
            retired = {e["id"] for e in read_all(self.reader, self.conn, self.gate, etype, by_ids(missing), [],
                                                 retired=True)} if missing else set()
            for i in ids:
                e = found.get(i)
                if e is None and i not in retired:
                    raise Passthrough(f"{METHOD}: {etype} {i} is not in the cache")
                self._seen[(etype, i)] = None if e is None else {
                    "type": etype, "id": i, "name": e.get(nf) if nf else None,
                    "status": e.get("sg_status_list"), "valid": "valid"}
        if with_image:  # loaded: each type lacks `image` on the site, so it shows as null
            self._imaged.update(links)

    def get(self, link: Link | None, *, with_image: bool = False) -> dict[str, Any] | None:
        user = None if link is None else self._seen[link]
        if user is None or not with_image:
            return user
        assert link in self._imaged
        return {**user, "image": None}


def _link(value: Any) -> Link | None:
    return (value["type"], value["id"]) if isinstance(value, dict) else None


def _params(params: Any) -> tuple[int, dict[str, list[Any]]]:
    """The note id and extra fields per type; Passthrough for anything the site should judge."""
    if not isinstance(params, dict) or set(params) - {"note_id", "entity_fields"}:
        raise Passthrough(f"{METHOD}: unsupported params")
    note_id = params.get("note_id")
    if not isinstance(note_id, int) or isinstance(note_id, bool):
        raise Passthrough(f"{METHOD}: note_id is not an id: the site decides")
    extra = params.get("entity_fields") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
        raise Passthrough(f"{METHOD}: entity_fields is not type -> list: the site decides")
    return note_id, {t: [f for f in extra.get(t, []) if f not in DEFAULTS[t]] for t in DEFAULTS}


def _raw_links(reader: ReadEngine, conn: Connection, etype: str, fname: str, ids: list[int]) -> dict[int, Link | None]:
    """A link field's stored target per id, retired targets included (reads hide them)."""
    table = reader.store[etype].table
    rows = conn.execute(select(table.c.id, table.c[fname + "__type"], table.c[fname + "__id"])
                        .where(table.c.id.in_(ids))).all()
    return {r[0]: (r[1], r[2]) if r[1] is not None and r[2] is not None else None for r in rows}


def note_thread(reader: ReadEngine, conn: Connection, params: Any, *, gate: Gate = None) -> list[dict[str, Any]]:
    """The thread as the site answers it, or Passthrough."""
    note_id, extra = _params(params)
    store = reader.store
    for t in DEFAULTS:
        if t not in store:
            raise Passthrough(f"uncached entity type {t} in {METHOD}")
    conn = snapshot(reader, conn)
    site = site_fields(reader, conn)
    try:
        return _thread(reader, conn, gate, site, note_id, extra)
    except errors.Fault as f:  # a request the engine finds invalid: the site's Fault is authoritative
        raise Passthrough(f"{METHOD}: invalid request, site decides: {f.message}") from None


def _thread(reader: ReadEngine, conn: Connection, gate: Gate, site: SiteFields, note_id: int,
            extra: dict[str, list[Any]]) -> list[dict[str, Any]]:
    notes = read_ids(reader, conn, gate, "Note", [note_id],
                     extra["Note"] + ["content", "created_at", "created_by", "replies", "attachments"])
    if not notes:
        raise Passthrough(f"{METHOD}: Note {note_id} is not an active Note in the cache")
    note = notes[0]
    # Replies: those the Note lists, and those naming the Note as their entity.
    listed = sorted({link["id"] for link in note["replies"] or [] if link["type"] == "Reply"})
    of_note = [{"path": "entity", "relation": "is", "values": [{"type": "Note", "id": note_id}]}]
    if listed:
        of_note.append({"path": "id", "relation": "in", "values": listed})
    attachment_ids = sorted({link["id"] for link in note["attachments"] or [] if link["type"] == "Attachment"})
    if len(listed) + len(attachment_ids) > MAX_ITEMS:
        raise Passthrough(f"{METHOD}: more than {MAX_ITEMS} items")

    reply_fields = reader.schema.entities["Reply"].fields
    fallback = "created_by" in reply_fields  # a reply without a user shows its creator
    if not fallback and not site.lacks("Reply", "created_by"):
        raise Passthrough(f"{METHOD}: Reply.created_by is not in the cached schema")
    replies = read_all(reader, conn, gate, "Reply", {"logical_operator": "or", "conditions": of_note},
                       extra["Reply"] + ["content", "created_at", "user"] + (["created_by"] if fallback else []))
    attachments = read_ids(reader, conn, gate, "Attachment", attachment_ids,
                           extra["Attachment"] + ["created_at", "created_by"])

    # A reply's user, as the thread names it: its `user`, else (none stored) its creator.
    raw_users = _raw_links(reader, conn, "Reply", "user", [r["id"] for r in replies]) if replies else {}
    reply_user: dict[int, Link | None] = {}
    for r in replies:
        user = _link(r["user"])
        if user is None and raw_users.get(r["id"]) is None and fallback:
            user = _link(r["created_by"])
        reply_user[r["id"]] = user  # None: no user, or a retired one (the site shows null)

    users = Users(reader, conn, gate, site)
    users.load({u for u in [_link(note["created_by"])] + [_link(a["created_by"]) for a in attachments] if u},
               with_image=False)
    users.load({u for u in reply_user.values() if u}, with_image=True)

    def item(etype: str, ent: dict[str, Any], user: Link | None) -> dict[str, Any]:
        out = {"type": etype, "id": ent["id"], **{f: ent[f] for f in dict.fromkeys(extra[etype])
                                                   if isinstance(f, str) and f not in ("type", "id")}}
        for f in DEFAULTS[etype]:
            if f == "created_at":
                out[f] = stamp(ent[f])
            elif f in ("created_by", "user"):
                out[f] = users.get(user, with_image=f == "user")
            else:
                out[f] = ent[f]
        return out

    rest = [("Reply", r, reply_user[r["id"]]) for r in replies]
    rest += [("Attachment", a, _link(a["created_by"])) for a in attachments]
    rest.sort(key=lambda x: (x[1]["created_at"] or "", x[1]["id"]))
    for (t1, e1, _), (t2, e2, _) in pairwise(rest):
        if t1 != t2 and (e1["created_at"] or "") == (e2["created_at"] or ""):
            raise Passthrough(f"{METHOD}: a Reply and an Attachment created in the same second")
    return [item("Note", note, _link(note["created_by"]))] + [item(t, e, u) for t, e, u in rest]
