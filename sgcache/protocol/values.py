"""Value encodings on the wire: datetimes, dates, and the shape of a link in read results."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DATE_FORMAT = "%Y-%m-%d"
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def format_datetime(value: _dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value.strftime(DATETIME_FORMAT)


def parse_datetime(value: Any) -> _dt.datetime | None:
    """Parse the wire form of a date_time into an aware UTC datetime; None if malformed."""
    if not isinstance(value, str) or not _DATETIME_RE.match(value):
        return None
    try:
        return _dt.datetime.strptime(value, DATETIME_FORMAT).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None


def is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        return False
    try:
        _dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def link(entity_type: str, entity_id: int, name: Any) -> dict[str, Any]:
    """A linked entity exactly as read results carry it."""
    return {"type": entity_type, "id": entity_id, "name": name}
