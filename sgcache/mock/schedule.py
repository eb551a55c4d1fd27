"""`work_schedule_read` / `work_schedule_update`: working days, and exceptions to them.

The studio work week is Monday to Friday. An update records an exception for one day
at one level: the studio (neither ``project`` nor ``user``), a project, or a user (not
both, as the client's docstring says). A read answers every day of the inclusive range
with ``working``, ``description`` and ``reason``; the most specific exception wins
(user, then project, then studio), else the work week applies (``STUDIO_WORK_WEEK``).
Exceptions live in the store's meta and are saved with ``--state``. Tasks are never
rescheduled (as on a site whose preference is not to recalculate): an explicit
``recalculate_field``, which would move Task dates on the site, is refused.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..protocol import errors

MAX_DAYS = 3660
RECALCULATE = (None, "due_date", "duration")


def _date(method: str, name: str, value: Any) -> dt.date:
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise errors.crud(method, f"'{name}' must be a date in YYYY-MM-DD format, got {value!r}")


class WorkSchedule:
    def __init__(self, store: Any) -> None:
        self.store = store

    @property
    def _rules(self) -> dict[str, dict[str, Any]]:
        """'<level>:<id>:<date>' -> {"working", "description"}."""
        return self.store.meta.setdefault("work_day_rules", {})

    def _level(self, method: str, params: dict[str, Any]) -> tuple[str, int | None]:
        project, user = params.get("project"), params.get("user")
        if project and user:
            raise errors.crud(method, "'project' and 'user' cannot be used together")
        for name, value, etype in (("project", project, "Project"), ("user", user, "HumanUser")):
            if value:
                if not isinstance(value, dict) or value.get("type") != etype or \
                        self.store.get_active(etype, value.get("id")) is None:
                    raise errors.crud(method, f"'{name}' must be an existing {etype}, got {value!r}")
                return name, value["id"]
        return "studio", None

    def read(self, actor: Any, params: Any) -> dict[str, Any]:
        m = "work_schedule_read"
        if not isinstance(params, dict):
            raise errors.crud(m, "parameters must be an object")
        start = _date(m, "start_date", params.get("start_date"))
        end = _date(m, "end_date", params.get("end_date"))
        if end < start:
            raise errors.crud(m, "'end_date' is before 'start_date'")
        if (end - start).days >= MAX_DAYS:
            raise errors.crud(m, f"the date range may span at most {MAX_DAYS} days")
        levels = [("studio", None)]
        for name, etype in (("project", "Project"), ("user", "HumanUser")):
            value = params.get(name)
            if value:
                if not isinstance(value, dict) or value.get("type") != etype or \
                        self.store.get_active(etype, value.get("id")) is None:
                    raise errors.crud(m, f"'{name}' must be an existing {etype}, got {value!r}")
                levels.append((name, value["id"]))
        rules = self._rules
        out: dict[str, Any] = {}
        day = start
        while day <= end:
            key = day.isoformat()
            answer = {"working": day.weekday() < 5, "description": None, "reason": "STUDIO_WORK_WEEK"}
            for level, lid in levels:  # least specific first: the last match wins
                rule = rules.get(f"{level}:{lid}:{key}")
                if rule is not None:
                    answer = {"working": rule["working"], "description": rule["description"],
                              "reason": f"{level.upper()}_EXCEPTION"}
            out[key] = answer
            day += dt.timedelta(days=1)
        return out

    def update(self, actor: Any, params: Any) -> dict[str, Any]:
        m = "work_schedule_update"
        if not isinstance(params, dict):
            raise errors.crud(m, "parameters must be an object")
        day = _date(m, "date", params.get("date"))
        working = params.get("working")
        if not isinstance(working, bool):
            raise errors.crud(m, f"'working' must be true or false, got {working!r}")
        description = params.get("description")
        if description is not None and not isinstance(description, str):
            raise errors.crud(m, "'description' must be text")
        if params.get("recalculate_field") not in RECALCULATE:
            raise errors.crud(m, "'recalculate_field' must be 'due_date' or 'duration'")
        if params.get("recalculate_field") is not None:
            raise errors.crud(m, "this site does not recalculate Task schedules: leave 'recalculate_field' unset")
        level, lid = self._level(m, params)
        with self.store.transaction():
            self._rules[f"{level}:{lid}:{day.isoformat()}"] = {"working": working, "description": description}
            self.store.version += 1
        return {"date": day.isoformat(), "description": description, "project": params.get("project"),
                "user": params.get("user"), "working": working}
