"""A small named world for the mock's tests: one entity type with a field of every type.

`Thing` rows 1-3 hold chosen values and row 4 holds only nulls; `Other` rows are
link targets (`Oakley` is retired). Expected results in the tests are written
by hand against these rows.
"""

from __future__ import annotations

from typing import Any

from sgcache.schema import EntitySchema, FieldSchema, Schema

SYS = {"id": "number", "created_at": "date_time", "updated_at": "date_time",
       "created_by": "entity", "updated_by": "entity"}
USER_TYPES = ("HumanUser", "ApiUser")

TYPES: dict[str, dict[str, Any]] = {
    "Project": {"name": "text", "archived": "checkbox"},
    "Other": {"code": "text", "project": ("entity", ["Project"]), "things": ("multi_entity", ["Thing"])},
    "Thing": {
        "code": "text", "project": ("entity", ["Project"]),
        "sg_text": "text", "sg_number": "number", "sg_float": "float", "sg_currency": "currency",
        "sg_percent": "percent", "sg_duration": "duration", "sg_timecode": "timecode",
        "sg_date": "date", "sg_date_time": "date_time", "sg_checkbox": "checkbox",
        "sg_list": ("list", ["a", "b", "c"]), "sg_status_list": ("status_list", ["ip", "fin", "wtg"]),
        "sg_entity_type": "entity_type", "sg_color": "color", "sg_uuid": "uuid", "sg_footage": "footage",
        "image": "image", "tag_list": "tag_list",
        "sg_link": ("entity", ["Other", "Thing"]), "sg_links": ("multi_entity", ["Other", "Thing"]),
        "sg_addressing": ("addressing", ["HumanUser"]),
        "sg_url": "url", "sg_meta": "serializable", "sg_secret": "password", "step_0": "pivot_column",
    },
    "HumanUser": {"name": "text", "login": "text", "firstname": "text", "lastname": "text",
                  "sg_status_list": ("status_list", ["act", "dis"]), "password_proxy": "password",
                  "image": "image"},
    "ApiUser": {"firstname": "text", "salted_password": "text", "generate_events": "checkbox"},
    "Attachment": {"filename": "text", "display_name": "text", "file_size": "number", "this_file": "url",
                   "attachment_links": ("multi_entity", ["Thing", "Other"]),
                   "project": ("entity", ["Project"]), "tag_list": "tag_list"},
    "EventLogEntry": {"event_type": "text", "attribute_name": "text", "entity": ("entity", []),
                      "project": ("entity", ["Project"]), "user": ("entity", list(USER_TYPES)),
                      "meta": "serializable", "session_uuid": "uuid", "description": "text"},
}

#: Inverse fields for the back-reference tests.
INVERSE = {("Thing", "sg_link", "Other"): "things", ("Other", "things", "Thing"): "sg_link"}


def build_schema() -> Schema:
    entities = {}
    for etype, fields in TYPES.items():
        ent = EntitySchema(etype, etype)
        allf = {**SYS, **fields} if etype != "EventLogEntry" else {"id": "number", "created_at": "date_time",
                                                                     **fields}
        for fname, spec in allf.items():
            dt, extra = (spec if isinstance(spec, tuple) else (spec, []))
            vt = tuple(extra) if dt in ("entity", "multi_entity", "addressing") else ()
            if fname in ("created_by", "updated_by"):
                vt = USER_TYPES
            vv = tuple(extra) if dt in ("list", "status_list") else ()
            ent.fields[fname] = FieldSchema(etype, fname, dt, display_name=fname, valid_types=vt,
                                            valid_values=vv, default_value=False if dt == "checkbox" else None)
            ent.fields[fname].to_site()
        entities[etype] = ent
    return Schema(entities)


def O(i: int) -> dict[str, Any]:  # noqa: E743 - short on purpose: a link to Other i
    return {"type": "Other", "id": i}


def T(i: int) -> dict[str, Any]:
    return {"type": "Thing", "id": i}


def H(i: int) -> dict[str, Any]:
    return {"type": "HumanUser", "id": i}


PROJECTS = [{"name": "Live"}, {"name": "Archive", "archived": True}]
OTHERS = [{"code": "Oak"}, {"code": "Pine"}, {"code": "Oakley"}]
USERS = [{"name": "Zoë Müller", "login": "zoe", "sg_status_list": "act", "password_proxy": "pw-zoe"},
         {"name": "Ann", "login": "ann", "sg_status_list": "act", "password_proxy": "pw-ann"},
         {"name": "Dis Abled", "login": "dis", "sg_status_list": "dis", "password_proxy": "pw-dis"}]
THINGS: list[dict[str, Any]] = [
    {"code": "t1", "project": {"type": "Project", "id": 1}, "sg_text": "Alpha Beta", "sg_number": 10,
     "sg_float": 1.5, "sg_currency": 2.5, "sg_percent": 50, "sg_duration": 60, "sg_timecode": 1000,
     "sg_date": "2024-01-10", "sg_date_time": "2024-01-10T10:00:00Z", "sg_checkbox": True,
     "sg_list": "a", "sg_status_list": "ip", "sg_entity_type": "Shot", "sg_color": "255,0,0",
     "sg_uuid": "AbC-1", "sg_footage": "10-00", "tag_list": ["Red", "blue"], "sg_link": O(1),
     "sg_links": [O(1), O(2)], "sg_addressing": [H(1)],
     "sg_url": {"url": "https://example.com/a", "name": "A"}, "sg_meta": {"k": 1}, "sg_secret": "s1"},
    {"code": "t2", "project": {"type": "Project", "id": 1}, "sg_text": "béta école", "sg_number": 0,
     "sg_float": -2.0, "sg_currency": 0.0, "sg_percent": 0, "sg_duration": 0, "sg_timecode": 0,
     "sg_date": "2024-02-20", "sg_date_time": "2024-02-20T00:00:00Z", "sg_checkbox": False,
     "sg_list": "b", "sg_status_list": "fin", "sg_entity_type": "Asset", "sg_color": "0,0,255",
     "sg_uuid": "def-2", "sg_footage": "0-01", "tag_list": ["red"], "sg_link": O(2), "sg_links": [O(2)],
     "sg_addressing": [H(1), H(2)]},
    {"code": "t3", "project": {"type": "Project", "id": 2}, "sg_text": "ÉCOLE", "sg_number": -5,
     "sg_float": 0.0, "sg_currency": -1.0, "sg_percent": 100, "sg_duration": 30, "sg_timecode": 5,
     "sg_date": "2023-12-31", "sg_date_time": "2023-12-31T23:59:59Z", "sg_list": "c",
     "sg_status_list": "IP", "sg_entity_type": "Shot", "tag_list": [], "sg_link": T(1), "sg_links": [T(2)]},
    {"code": None},
]
#: Thing 5 links to Oakley (Other 3), which is retired after creation.
LINKS_TO_RETIRED = {"code": "t5", "project": {"type": "Project", "id": 1}, "sg_link": O(3), "sg_links": [O(3)]}


def populate(create: Any, delete: Any) -> None:
    """Create the world through a `create(type, data)` function (client or in-process)."""
    for p in PROJECTS:
        create("Project", p)
    for u in USERS:
        create("HumanUser", u)
    for o in OTHERS:
        create("Other", o)
    for t in THINGS:
        create("Thing", t)
    create("Thing", LINKS_TO_RETIRED)
    delete("Other", 3)
