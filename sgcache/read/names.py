"""The cache's reading of link display names: which field is the `name` key of a link.

Read results carry links as `{"type", "id", "name"}`, `name` being the linked record's
display-name field (protocol.md §4.4). The mock site decides the same with its own table
(`sgcache.mock.names`), so a wrong guess here shows up in the differential tests.
"""

from __future__ import annotations

from ..schema import EntitySchema

#: Types whose link `name` is not their `code` (tk-core and the API usage tips).
_SPECIAL_NAME_FIELDS = {
    "Project": "name", "Task": "content", "HumanUser": "name", "ClientUser": "name",
    "Note": "subject", "Department": "name", "Delivery": "title", "Ticket": "title",
    "Reply": "content", "ApiUser": "firstname", "Attachment": "filename",
    "Page": "name", "Tag": "name", "EventLogEntry": "description",
}
_FALLBACK_NAME_FIELDS = ("code", "name", "title", "content", "subject", "description")


def name_field(entity: EntitySchema | None, entity_type: str) -> str | None:
    """The field whose value is the `name` key of links to this type, or None."""
    special = _SPECIAL_NAME_FIELDS.get(entity_type)
    if entity is None:
        return special or "code"
    if special and special in entity.fields:
        return special
    for f in _FALLBACK_NAME_FIELDS:
        if f in entity.fields:
            return f
    return None
