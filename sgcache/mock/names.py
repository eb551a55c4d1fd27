"""The mock site's link names: which field of a record is the `name` of links to it.

Read results carry every link as `{"type", "id", "name"}`, `name` being the linked
record's display name (protocol.md §4.4): `code` for most types, with the exceptions
Toolkit lists (tk-core `SG_ENTITY_SPECIAL_NAME_FIELDS`) and the API usage tips name.
The cache decides the same on its own (`sgcache/read/names.py`); the differential
tests compare the two.
"""

from __future__ import annotations

from ..schema import EntitySchema

#: Documented exceptions to `code` (protocol.md §4.4).
DOCUMENTED: dict[str, str] = {
    "Project": "name", "Task": "content", "HumanUser": "name", "Note": "subject",
    "Department": "name", "Delivery": "title", "Ticket": "title",
}
#: The mock's choice for built-in types without `code` that the reference does not cover:
#: what the site's own pages title such a record by.
UNDOCUMENTED: dict[str, str] = {
    "ClientUser": "name", "ApiUser": "firstname", "Reply": "content", "Attachment": "filename",
    "Page": "name", "Tag": "name", "EventLogEntry": "description",
}
#: For any other type: the first of these it has (custom and site-specific types).
FALLBACKS: tuple[str, ...] = ("code", "name", "title", "content", "subject", "description")


def display_field(entity_type: str, entity: EntitySchema | None) -> str | None:
    """The field naming links to `entity_type`; None if the type has no such field."""
    chosen = DOCUMENTED.get(entity_type) or UNDOCUMENTED.get(entity_type)
    if entity is None:  # a type the schema does not know: trust the tables
        return chosen or "code"
    if chosen is not None and chosen in entity.fields:
        return chosen
    return next((f for f in FALLBACKS if f in entity.fields), None)
