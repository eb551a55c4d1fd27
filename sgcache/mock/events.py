"""EventLogEntry rows, written inside the same store transaction as the change.

Shapes follow /work/shared/docs/event-log.md. Rows are ordinary EventLogEntry
records, so ``read`` on EventLogEntry (filters on id, paging ...) needs nothing
special; ``entity`` links to retired entities read back as null because every
link to a retired entity does.

Fault injection lives here too, because it is about commit order: an event can
become visible only after a delay (``hide_event``), and an id can be burnt
without ever being written, as a rolled-back transaction does.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..protocol.values import format_datetime, utcnow
from .auth import Actor
from .store import Store

ET = "EventLogEntry"


@dataclass
class CommitFaults:
    """Out-of-order commits: rates in [0, 1], delay in seconds."""

    event_delay: float = 0.0
    event_delay_rate: float = 0.0
    event_gap_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


class EventLog:
    def __init__(self, store: Store, names: Any, faults: CommitFaults | None = None) -> None:
        self.store = store
        self.names = names  # callable(type, id) -> display name
        self.faults = faults or CommitFaults()

    def link(self, entity_type: str, entity_id: int) -> dict[str, Any]:
        return {"type": entity_type, "id": entity_id, "name": self.names(entity_type, entity_id)}

    def write(self, actor: Actor, event_type: str, meta: dict[str, Any], *,
              entity: dict[str, Any] | None = None, attribute_name: str | None = None,
              project: dict[str, Any] | None = None, description: str = "") -> int | None:
        """Append one event; None when the caller does not generate events."""
        if not actor.generate_events or ET not in self.store.schema:
            return None
        if entity and entity.get("type") == ET:  # writing the log itself is not logged
            return None
        f = self.faults
        if f.event_gap_rate and f.rng.random() < f.event_gap_rate:
            self.store.allocate_id(ET)  # burnt: this id never appears
        eid = self.store.allocate_id(ET)
        rec = {
            "id": eid,
            "event_type": event_type,
            "attribute_name": attribute_name,
            "entity": {"type": entity["type"], "id": entity["id"]} if entity else None,
            "project": {"type": project["type"], "id": project["id"]} if project else None,
            "user": dict(actor.user) if actor.user else None,
            "meta": meta,
            "created_at": format_datetime(utcnow()),
            "session_uuid": actor.session_uuid,
            "description": description,
        }
        self.store.insert(ET, rec)
        if f.event_delay_rate and f.event_delay > 0 and f.rng.random() < f.event_delay_rate:
            self.store.hide_event(eid, time.monotonic() + f.event_delay)
        return eid

    # -- the shapes ------------------------------------------------------------------
    def new(self, actor: Actor, etype: str, eid: int, project: Any) -> int | None:
        return self.write(actor, f"Shotgun_{etype}_New",
                          {"type": "new_entity", "entity_type": etype, "entity_id": eid},
                          entity={"type": etype, "id": eid}, project=project,
                          description=f"Created {etype} {self.names(etype, eid)!s}")

    def change(self, actor: Actor, etype: str, eid: int, field_name: str, data_type: str,
               project: Any, *, old: Any = None, new: Any = None, added: list | None = None,
               removed: list | None = None, in_create: bool = False,
               extra: dict[str, Any] | None = None) -> int | None:
        meta: dict[str, Any] = {"type": "attribute_change", "attribute_name": field_name,
                                "entity_type": etype, "entity_id": eid, "field_data_type": data_type}
        if added is not None or removed is not None:
            meta["added"] = added or []
            meta["removed"] = removed or []
        else:
            meta["old_value"] = old
            meta["new_value"] = new
        if in_create:
            meta["in_create"] = True
        if extra:
            meta.update(extra)
        return self.write(actor, f"Shotgun_{etype}_Change", meta, entity={"type": etype, "id": eid},
                          attribute_name=field_name, project=project,
                          description=f"Changed {etype} {self.names(etype, eid)!s} {field_name}")

    def retirement(self, actor: Actor, etype: str, eid: int, project: Any, when: str) -> None:
        self.change(actor, etype, eid, "retirement_date", "date_time", project,
                    old=None, new=_wire(when))
        name = self.names(etype, eid)
        self.write(actor, f"Shotgun_{etype}_Retirement",
                   {"type": "entity_retirement", "class_name": etype, "display_name": name,
                    "entity_id": eid, "entity_type": etype, "id": eid, "retirement_date": when},
                   entity={"type": etype, "id": eid}, project=project,
                   description=f"Retired {etype} {name!s}")

    def revival(self, actor: Actor, etype: str, eid: int, project: Any, was: str | None) -> None:
        self.change(actor, etype, eid, "retirement_date", "date_time", project,
                    old=_wire(was) if was else None, new=None)
        name = self.names(etype, eid)
        self.write(actor, f"Shotgun_{etype}_Revival",
                   {"class_name": etype, "display_name": name, "entity_id": eid,
                    "entity_type": etype, "id": eid},
                   entity={"type": etype, "id": eid}, project=project,
                   description=f"Revived {etype} {name!s}")

    def display_column(self, actor: Actor, action: str, column_id: int, meta: dict[str, Any]) -> None:
        meta = {"type": "new_entity" if action == "New" else "attribute_change",
                "entity_type": "DisplayColumn", "entity_id": column_id, **meta}
        self.write(actor, f"Shotgun_DisplayColumn_{action}", meta,
                   attribute_name=meta.get("attribute_name"),
                   description=f"DisplayColumn {meta.get('human_name', column_id)} {action}")


def retirement_stamp() -> str:
    """The site's retirement_date text in Retirement meta: 'YYYY-MM-DD HH:MM:SS UTC'."""
    return utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")


def _wire(stamp: str) -> str:
    """'YYYY-MM-DD HH:MM:SS UTC' -> wire date_time."""
    return stamp[:10] + "T" + stamp[11:19] + "Z"
