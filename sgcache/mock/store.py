"""The mock site's in-memory store: one dict id -> record per entity type.

Records hold wire-format values (links as ``{"type", "id"}``; names are looked up
at read time because the linked entity's name can change). Retirement is a
per-type set, so the active/retired split needs no scan of the records.

Invariant: each type's dict is in ascending id order (ids are handed out
increasing and bulk loads are sorted), so an unfiltered read ordered by id is a
slice of the key list. Every write bumps a per-type version; query caches key on
the versions of the types they read.

All mutation happens under ``lock`` inside ``transaction()``, which keeps an undo
journal so that a failed batch (or a failed write half-way) leaves no trace.
"""

from __future__ import annotations

import copy
import gc
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ..schema import Schema

_MISSING = object()


@dataclass
class _Journal:
    """What to restore if the transaction fails."""

    records: dict[tuple[str, int], Any] = field(default_factory=dict)
    retired: dict[tuple[str, int], bool] = field(default_factory=dict)
    next_ids: dict[str, int] = field(default_factory=dict)
    hidden: dict[int, Any] = field(default_factory=dict)


class Store:
    """Entities of every type, retired flags, id counters and versions."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.tables: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in schema.types()}
        self.retired: dict[str, set[int]] = {t: set() for t in schema.types()}
        self.next_ids: dict[str, int] = {t: 1 for t in schema.types()}
        self.versions: dict[str, int] = {t: 0 for t in schema.types()}
        #: per type, bumped only when the set of (active/retired) ids changes
        self.members: dict[str, int] = {t: 0 for t in schema.types()}
        self._id_lists: dict[tuple[str, bool], tuple[int, list[int]]] = {}
        self.version = 0  # bumped on any change, including schema edits
        self.schema_version = 0  # bumped on schema edits only
        self.saved_version = -1  # `version` when the state file was last written or read
        #: EventLogEntry ids not visible before the given monotonic time (fault injection).
        self.hidden_events: dict[int, float] = {}
        #: uploaded bytes by Attachment id: (content_type, filename, data)
        self.files: dict[int, tuple[str, str, bytes]] = {}
        #: free-form site data persisted with the state (credentials, counters).
        self.meta: dict[str, Any] = {}
        self.lock = threading.RLock()
        self._journal: _Journal | None = None

    # -- type bookkeeping ----------------------------------------------------
    def ensure_type(self, entity_type: str) -> None:
        """Make room for a type the schema gained (schema edits, state reload)."""
        self.tables.setdefault(entity_type, {})
        self.retired.setdefault(entity_type, set())
        self.next_ids.setdefault(entity_type, 1)
        self.versions.setdefault(entity_type, 0)
        self.members.setdefault(entity_type, 0)

    def bump(self, entity_type: str, members: bool = False) -> None:
        self.versions[entity_type] = self.versions.get(entity_type, 0) + 1
        self.version += 1
        if members:
            self.members[entity_type] = self.members.get(entity_type, 0) + 1

    # -- reads -----------------------------------------------------------------
    def get(self, entity_type: str, entity_id: int) -> dict[str, Any] | None:
        """The record, retired or not; None if it never existed."""
        table = self.tables.get(entity_type)
        return table.get(entity_id) if table is not None else None

    def get_active(self, entity_type: str, entity_id: Any) -> dict[str, Any] | None:
        table = self.tables.get(entity_type)
        if table is None:
            return None
        rec = table.get(entity_id)
        if rec is None or entity_id in self.retired[entity_type]:
            return None
        return rec

    def is_retired(self, entity_type: str, entity_id: int) -> bool:
        return entity_id in self.retired.get(entity_type, ())

    def ids(self, entity_type: str, retired: bool = False) -> list[int]:
        """Ids in ascending order, active ones or retired ones.

        Cached until the set of ids changes (updates do not change it), so paging an
        unfiltered read is a slice. The list is shared: callers must not mutate it.
        """
        key = (entity_type, retired)
        version = self.members.get(entity_type, 0)
        hit = self._id_lists.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        table = self.tables.get(entity_type, {})
        gone = self.retired.get(entity_type, set())
        if retired:
            ids = sorted(gone)
        elif not gone:
            ids = list(table)
        else:
            ids = [i for i in table if i not in gone]
        self._id_lists[key] = (version, ids)
        return ids

    def visible_hidden_events(self) -> set[int]:
        """EventLogEntry ids that are written but not yet visible (now)."""
        if not self.hidden_events:
            return set()
        now = time.monotonic()
        done = [i for i, t in self.hidden_events.items() if t <= now]
        for i in done:
            del self.hidden_events[i]
        return set(self.hidden_events)

    # -- writes (call inside transaction()) ---------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: on any exception every change made inside is undone."""
        with self.lock:
            if self._journal is not None:  # nested: the outer one owns the undo
                yield
                return
            self._journal = _Journal()
            try:
                yield
            except BaseException:
                self._rollback(self._journal)
                raise
            finally:
                self._journal = None

    def _save(self, entity_type: str, entity_id: int) -> None:
        j = self._journal
        if j is None:
            return
        key = (entity_type, entity_id)
        if key not in j.records:
            rec = self.tables[entity_type].get(entity_id, _MISSING)
            j.records[key] = rec if rec is _MISSING else copy.deepcopy(rec)
        if key not in j.retired:
            j.retired[key] = entity_id in self.retired[entity_type]

    def _rollback(self, j: _Journal) -> None:
        touched = set()
        for (t, i), rec in j.records.items():
            touched.add(t)
            if rec is _MISSING:
                self.tables[t].pop(i, None)
            else:
                self.tables[t][i] = rec
        for (t, i), was in j.retired.items():
            (self.retired[t].add if was else self.retired[t].discard)(i)
        for t, n in j.next_ids.items():
            self.next_ids[t] = n
            touched.add(t)
        for i, v in j.hidden.items():
            if v is _MISSING:
                self.hidden_events.pop(i, None)
            else:
                self.hidden_events[i] = v
        for t in touched:
            self.bump(t, members=True)

    def allocate_id(self, entity_type: str) -> int:
        self.ensure_type(entity_type)
        if self._journal is not None and entity_type not in self._journal.next_ids:
            self._journal.next_ids[entity_type] = self.next_ids[entity_type]
        i = self.next_ids[entity_type]
        self.next_ids[entity_type] = i + 1
        return i

    def insert(self, entity_type: str, record: dict[str, Any]) -> None:
        """Add a new record; its id must come from allocate_id (keeps id order)."""
        self.ensure_type(entity_type)
        self._save(entity_type, record["id"])
        self.tables[entity_type][record["id"]] = record
        self.bump(entity_type, members=True)

    def modify(self, entity_type: str, entity_id: int) -> dict[str, Any]:
        """The stored record, journaled so the caller may change it in place."""
        self._save(entity_type, entity_id)
        self.bump(entity_type)
        return self.tables[entity_type][entity_id]

    def set_retired(self, entity_type: str, entity_id: int, retired: bool) -> None:
        self._save(entity_type, entity_id)
        (self.retired[entity_type].add if retired else self.retired[entity_type].discard)(entity_id)
        self.bump(entity_type, members=True)

    def hide_event(self, event_id: int, until: float) -> None:
        if self._journal is not None and event_id not in self._journal.hidden:
            self._journal.hidden[event_id] = self.hidden_events.get(event_id, _MISSING)
        self.hidden_events[event_id] = until

    # -- bulk load ------------------------------------------------------------------
    def load_records(self, records: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Bulk-load (type, record) pairs with their own ids; no events, no checks.

        A record's ``__retired`` key marks it retired. Returns the count loaded.
        """
        n = 0
        out_of_order: set[str] = set()
        gc_was_on = gc.isenabled()
        gc.disable()  # millions of small dicts: avoid hundreds of useless collections
        try:
            n = self._load(records, out_of_order)
        finally:
            if gc_was_on:
                gc.enable()
        gc.freeze()
        return n

    def _load(self, records: Iterable[tuple[str, dict[str, Any]]], out_of_order: set[str]) -> int:
        n = 0
        with self.lock:
            last: dict[str, int] = {}
            for etype, rec in records:
                self.ensure_type(etype)
                rec = dict(rec)
                retired = bool(rec.pop("__retired", False))
                rec.pop("type", None)
                eid = rec["id"]
                if eid <= last.get(etype, 0) or (etype not in last and self.tables[etype]
                                                  and eid <= next(reversed(self.tables[etype]))):
                    out_of_order.add(etype)
                last[etype] = eid
                self.tables[etype][eid] = rec
                if retired:
                    self.retired[etype].add(eid)
                if eid >= self.next_ids[etype]:
                    self.next_ids[etype] = eid + 1
                n += 1
            for etype in out_of_order:
                self.tables[etype] = dict(sorted(self.tables[etype].items()))
            for etype in set(last):
                self.bump(etype, members=True)
        return n

    def count(self) -> int:
        return sum(len(t) for t in self.tables.values())
