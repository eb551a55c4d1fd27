"""Our own compact studio schema for the mock site.

The mock needs a schema that looks like a real site (names, data types,
valid_types/valid_values, UI-only columns) without shipping a customer dump, so
it is declared here as small tables and turned into `Schema` objects. Every data
type a real site reports appears somewhere, so code paths for each get exercised.
"""

from __future__ import annotations

from typing import Any

from ..schema import EntitySchema, FieldSchema, Schema

#: Who can author a change: the `created_by`/`updated_by`/`user` link targets.
USER_TYPES: tuple[str, ...] = ("HumanUser", "ApiUser")
#: Who can be assigned or addressed.
ASSIGNEE_TYPES: tuple[str, ...] = ("HumanUser", "Group")

# A field spec is (name, data_type, display_name, extra); extra may hold
# "types" (valid_types), "values" (valid_values), "default" and "editable".
_F = tuple[str, str, str, dict[str, Any]]


def _f(name: str, dt: str, display: str, **extra: Any) -> _F:
    return (name, dt, display, extra)


def _project() -> _F:
    return _f("project", "entity", "Project", types=("Project",))


def _tags() -> _F:
    return _f("tag_list", "tag_list", "Tags", types=("Tag",))


def _notes() -> _F:
    return _f("notes", "multi_entity", "Notes", types=("Note",))


def _pivot(name: str, display: str) -> _F:
    return _f(name, "pivot_column", display, editable=False)


_TASK_STATUS = ("wtg", "rdy", "ip", "hld", "fin")
_NOTE_LINK_TYPES = ("Asset", "Shot", "Sequence", "Version", "Playlist", "PublishedFile")
_ACTIVE_STATUS = dict(values=("act", "dis"), default="act")

#: (entity type, display name, fields) — the system fields are added to every type.
_TYPES: list[tuple[str, str, list[_F]]] = [
    ("Project", "Project", [
        _f("name", "text", "Project Name"),
        _f("archived", "checkbox", "Archived", default=False),
        _f("sg_status", "list", "Status", values=("Bidding", "Active", "Lost", "Hold")),
        _f("sg_type", "list", "Type", values=("Short Film", "Feature Film", "Commercial",
                                              "Effects", "Game Cinematic", "Other")),
        _f("sg_description", "text", "Description"),
        _f("tank_name", "text", "Tank Name"),
        _f("start_date", "date", "Start Date"),
        _f("end_date", "date", "End Date"),
        _f("color", "color", "Color"),
        _f("image", "image", "Thumbnail"),
        _f("billboard", "url", "Billboard"),
        _f("users", "multi_entity", "Users", types=("HumanUser",)),
        _tags(),
        _pivot("step_0", "ALL TASKS"),
    ]),
    ("Sequence", "Sequence", [
        _f("code", "text", "Sequence Name"),
        _project(),
        _f("description", "text", "Description"),
        _f("sg_status_list", "status_list", "Status", values=("wtg", "ip", "hld", "omt", "fin"),
           default="ip"),
        _f("shots", "multi_entity", "Shots", types=("Shot",)),
        _f("tasks", "multi_entity", "Tasks", types=("Task",)),
        _notes(),
        _f("image", "image", "Thumbnail"),
        _tags(),
        _pivot("step_0", "ALL TASKS"),
    ]),
    ("Shot", "Shot", [
        _f("code", "text", "Shot Code"),
        _project(),
        _f("sg_sequence", "entity", "Sequence", types=("Sequence",)),
        _f("sg_status_list", "status_list", "Status",
           values=("wtg", "rdy", "ip", "cbb", "hld", "omt", "fin"), default="wtg"),
        _f("description", "text", "Description"),
        _f("sg_cut_in", "number", "Cut In"),
        _f("sg_cut_out", "number", "Cut Out"),
        _f("sg_cut_duration", "number", "Cut Duration"),
        _f("sg_cut_order", "number", "Cut Order"),
        _f("sg_head_in", "number", "Head In"),
        _f("sg_tail_out", "number", "Tail Out"),
        _f("sg_frame_rate", "float", "Frame Rate"),
        _f("sg_shot_type", "list", "Type", values=("Regular", "VFX", "Insert", "Stock")),
        _f("tasks", "multi_entity", "Tasks", types=("Task",)),
        _f("assets", "multi_entity", "Assets", types=("Asset",)),
        _notes(),
        _f("task_template", "entity", "Task Template", types=("TaskTemplate",)),
        _f("image", "image", "Thumbnail"),
        _f("filmstrip_image", "image", "Filmstrip Thumbnail"),
        _tags(),
        _pivot("step_0", "ALL TASKS"),
        _pivot("step_5", "Animation"),
        _pivot("step_6", "Lighting"),
    ]),
    ("Asset", "Asset", [
        _f("code", "text", "Asset Name"),
        _project(),
        _f("sg_asset_type", "list", "Type",
           values=("Character", "Vehicle", "Prop", "Environment", "Matte Painting")),
        _f("sg_status_list", "status_list", "Status",
           values=("wtg", "rdy", "ip", "hld", "omt", "fin"), default="wtg"),
        _f("description", "text", "Description"),
        _f("shots", "multi_entity", "Shots", types=("Shot",)),
        _f("tasks", "multi_entity", "Tasks", types=("Task",)),
        _notes(),
        _f("task_template", "entity", "Task Template", types=("TaskTemplate",)),
        _f("image", "image", "Thumbnail"),
        _tags(),
        _pivot("step_0", "ALL TASKS"),
        _pivot("step_9", "Model"),
    ]),
    ("Task", "Task", [
        _f("content", "text", "Task Name"),
        _project(),
        _f("entity", "entity", "Link", types=("Shot", "Asset", "Sequence")),
        _f("step", "entity", "Pipeline Step", types=("Step",)),
        _f("task_assignees", "multi_entity", "Assigned To", types=ASSIGNEE_TYPES),
        _f("sg_status_list", "status_list", "Status", values=_TASK_STATUS, default="wtg"),
        _f("start_date", "date", "Start Date"),
        _f("due_date", "date", "Due Date"),
        _f("duration", "duration", "Duration", default=0),
        _f("est_in_mins", "number", "Bid"),
        _f("sg_progress", "percent", "Progress"),
        _f("color", "color", "Gantt Bar Color"),
        _f("milestone", "checkbox", "Milestone", default=False),
        _f("sg_priority", "list", "Priority", values=("1", "2", "3", "4")),
        _f("upstream_tasks", "multi_entity", "Upstream Dependency", types=("Task",)),
        _f("downstream_tasks", "multi_entity", "Downstream Dependency", types=("Task",)),
        _notes(),
        _f("task_template", "entity", "Task Template", types=("TaskTemplate",)),
        _f("image", "image", "Thumbnail"),
        _tags(),
    ]),
    ("Step", "Pipeline Step", [
        _f("code", "text", "Step Name"),
        _f("short_name", "text", "Short Name"),
        _f("description", "text", "Description"),
        _f("entity_type", "entity_type", "Entity Type"),
        _f("color", "color", "Color"),
        _f("list_order", "number", "Order"),
    ]),
    ("TaskTemplate", "Task Template", [
        _f("code", "text", "Template Name"),
        _f("description", "text", "Description"),
        _f("entity_type", "entity_type", "Entity Type"),
    ]),
    ("Version", "Version", [
        _f("code", "text", "Version Name"),
        _project(),
        _f("entity", "entity", "Link", types=("Shot", "Asset", "Sequence")),
        _f("sg_task", "entity", "Task", types=("Task",)),
        _f("user", "entity", "Artist", types=USER_TYPES),
        _f("sg_status_list", "status_list", "Status", values=("na", "rev", "vwd", "apr"),
           default="rev"),
        _f("description", "text", "Description"),
        _f("sg_uploaded_movie", "url", "Uploaded Movie"),
        _f("sg_path_to_frames", "text", "Path to Frames"),
        _f("sg_path_to_movie", "text", "Path to Movie"),
        _f("frame_count", "number", "Frame Count"),
        _f("sg_first_frame", "number", "First Frame"),
        _f("sg_last_frame", "number", "Last Frame"),
        _f("frame_range", "text", "Frame Range"),
        _f("sg_uploaded_movie_frame_rate", "float", "Uploaded Movie Frame Rate"),
        _f("flagged", "checkbox", "Flagged", default=False),
        _f("playlists", "multi_entity", "Playlists", types=("Playlist",)),
        _f("published_files", "multi_entity", "Published Files", types=("PublishedFile",)),
        _notes(),
        _f("image", "image", "Thumbnail"),
        _f("filmstrip_image", "image", "Filmstrip Thumbnail"),
        _tags(),
        _pivot("step_0", "ALL TASKS"),
    ]),
    ("PublishedFile", "Published File", [
        _f("code", "text", "Published File Name"),
        _f("name", "text", "Name"),
        _project(),
        _f("entity", "entity", "Link", types=("Asset", "Shot", "Project")),
        _f("task", "entity", "Task", types=("Task",)),
        _f("version", "entity", "Version", types=("Version",)),
        _f("path", "url", "Path"),
        _f("path_cache", "text", "Path Cache"),
        _f("path_cache_storage", "entity", "Path Cache Storage", types=("LocalStorage",)),
        _f("published_file_type", "entity", "Published File Type", types=("PublishedFileType",)),
        _f("version_number", "number", "Version Number"),
        _f("sg_status_list", "status_list", "Status", values=("wtg", "ip", "cmpt"), default="wtg"),
        _f("description", "text", "Description"),
        _notes(),
        _f("image", "image", "Thumbnail"),
        _tags(),
    ]),
    ("PublishedFileType", "Published File Type", [
        _f("code", "text", "Published File Type"),
        _f("short_name", "text", "Short Name"),
        _f("description", "text", "Description"),
    ]),
    ("Note", "Note", [
        _f("subject", "text", "Subject"),
        _f("content", "text", "Body"),
        _project(),
        _f("note_links", "multi_entity", "Links", types=_NOTE_LINK_TYPES),
        _f("tasks", "multi_entity", "Tasks", types=("Task",)),
        _f("addressings_to", "addressing", "To", types=ASSIGNEE_TYPES),
        _f("addressings_cc", "addressing", "Cc", types=ASSIGNEE_TYPES),
        _f("user", "entity", "Author", types=USER_TYPES),
        _f("replies", "multi_entity", "Replies", types=("Reply",)),
        _f("attachments", "multi_entity", "Attachments", types=("Attachment",)),
        _f("sg_note_type", "list", "Type", values=("Internal", "Client")),
        _f("sg_status_list", "status_list", "Status", values=("opn", "ip", "clsd"), default="opn"),
        _tags(),
    ]),
    ("Reply", "Reply", [
        _f("content", "text", "Reply Content"),
        _f("entity", "entity", "Entity", types=("Note",)),
        _f("user", "entity", "Author", types=USER_TYPES),
    ]),
    ("Playlist", "Playlist", [
        _f("code", "text", "Playlist Name"),
        _project(),
        _f("description", "text", "Description"),
        _f("versions", "multi_entity", "Versions", types=("Version",)),
        _f("sg_date_and_time", "date_time", "Date and Time"),
        _f("sg_status", "status_list", "Status", values=("opn", "ip", "clsd"), default="opn"),
        _f("locked", "checkbox", "Locked", default=False),
        _notes(),
        _tags(),
    ]),
    ("HumanUser", "Person", [
        _f("name", "text", "Name"),
        _f("firstname", "text", "First Name"),
        _f("lastname", "text", "Last Name"),
        _f("login", "text", "Login"),
        _f("email", "text", "Email"),
        _f("sg_status_list", "status_list", "Status", **_ACTIVE_STATUS),
        _f("password_proxy", "password", "Password"),
        _f("groups", "multi_entity", "Groups", types=("Group",)),
        _f("projects", "multi_entity", "Projects", types=("Project",)),
        _f("permission_rule_set", "entity", "Permission Group", types=("PermissionRuleSet",)),
        _f("locked_until", "date_time", "Locked Until"),
        _f("home_page", "list", "Home Page", values=("home", "inbox", "my_tasks")),
        _f("image", "image", "Thumbnail"),
        _tags(),
    ]),
    ("ApiUser", "Script", [
        _f("firstname", "text", "Script Name"),
        _f("lastname", "text", "Version"),
        _f("description", "text", "Description"),
        _f("email", "text", "Email"),
        _f("salted_password", "text", "Application Key"),
        _f("generate_events", "checkbox", "Generate Events", default=True),
        _f("sg_status_list", "status_list", "Status", **_ACTIVE_STATUS),
        _f("permission_rule_set", "entity", "Permission Group", types=("PermissionRuleSet",)),
        _tags(),
    ]),
    # A person's or script's permission group (the site's "permission role"), by `code`.
    ("PermissionRuleSet", "Permission Group", [
        _f("code", "text", "Code"),
        _f("display_name", "text", "Display Name"),
        _f("parent_set", "entity", "Parent Set", types=("PermissionRuleSet",)),
    ]),
    ("Group", "Group", [
        _f("code", "text", "Group Name"),
        _f("users", "multi_entity", "Users", types=("HumanUser",)),
        _tags(),
    ]),
    ("Attachment", "File", [
        _f("filename", "text", "File Name"),
        _f("display_name", "text", "Display Name"),
        _project(),
        _f("this_file", "url", "File"),
        _f("attachment_links", "multi_entity", "Links",
           types=("Asset", "Sequence", "Shot", "Version")),
        _f("description", "text", "Description"),
        _f("file_size", "number", "File Size"),
        _f("file_extension", "text", "File Extension"),
        _f("sg_status_list", "status_list", "Status", values=("fin", "na"), default="na"),
        _tags(),
    ]),
    ("Page", "Page", [
        _f("name", "text", "Page Name"),
        _project(),
        _f("entity_type", "entity_type", "Entity Type"),
        _f("page_type", "text", "Page Type"),
        _f("description", "text", "Description"),
        _f("shared", "checkbox", "Shared", default=False),
        _f("admin", "checkbox", "Admin", default=False),
    ]),
    ("EventLogEntry", "Event Log Entry", [
        _f("event_type", "text", "Event Type"),
        _f("attribute_name", "text", "Attribute Name"),
        _f("description", "text", "Description"),
        _f("entity", "entity", "Link", types=()),  # filled with every type below
        _project(),
        _f("user", "entity", "User", types=USER_TYPES),
        _f("meta", "serializable", "Meta"),
        _f("session_uuid", "uuid", "Session Id"),
    ]),
    ("Tag", "Tag", [
        _f("name", "text", "Tag Name"),
        _f("description", "text", "Description"),
    ]),
    ("LocalStorage", "Local File Storage", [
        _f("code", "text", "Storage Name"),
        _f("description", "text", "Description"),
        _f("linux_path", "text", "Linux Path"),
        _f("mac_path", "text", "Mac Path"),
        _f("windows_path", "text", "Windows Path"),
        _f("uuid", "uuid", "Id"),
    ]),
    ("CustomEntity01", "Edit", [
        _f("code", "text", "Edit Name"),
        _project(),
        _f("description", "text", "Description"),
        _f("sg_status_list", "status_list", "Status", values=("wtg", "ip", "fin"), default="wtg"),
        _f("sg_budget", "currency", "Budget"),
        _f("sg_start_timecode", "timecode", "Start Timecode"),
        _f("sg_length", "footage", "Length"),
        _f("sg_uuid", "uuid", "Edit Id"),
        _f("sg_settings", "serializable", "Settings"),
        _f("sg_review_duration", "duration", "Review Duration"),
        _f("sg_completion", "percent", "Completion"),
        _f("sg_aspect_ratio", "float", "Aspect Ratio"),
        _f("sg_approved", "checkbox", "Approved", default=False),
        _f("sg_cut", "url", "Cut File"),
        _f("sg_shot", "entity", "Shot", types=("Shot",)),
        _f("sg_source_type", "entity_type", "Source Type"),
        _f("sg_color", "color", "Color"),
        _f("sg_deliver_at", "date_time", "Deliver At"),
        _f("sg_deliver_on", "date", "Deliver On"),
        _f("image", "image", "Thumbnail"),
        _tags(),
        _pivot("step_0", "ALL TASKS"),
    ]),
]

#: Pairs of fields that are each other's inverse (first side, second side).
_INVERSE_PAIRS: list[tuple[tuple[str, str, str], tuple[str, str, str]]] = [
    (("Task", "entity", "Shot"), ("Shot", "tasks", "Task")),
    (("Task", "entity", "Asset"), ("Asset", "tasks", "Task")),
    (("Task", "entity", "Sequence"), ("Sequence", "tasks", "Task")),
    (("Shot", "sg_sequence", "Sequence"), ("Sequence", "shots", "Shot")),
    (("Shot", "assets", "Asset"), ("Asset", "shots", "Shot")),
    (("Playlist", "versions", "Version"), ("Version", "playlists", "Playlist")),
    (("Reply", "entity", "Note"), ("Note", "replies", "Reply")),
    (("HumanUser", "groups", "Group"), ("Group", "users", "HumanUser")),
    (("Project", "users", "HumanUser"), ("HumanUser", "projects", "Project")),
    (("PublishedFile", "version", "Version"), ("Version", "published_files", "PublishedFile")),
    (("Note", "tasks", "Task"), ("Task", "notes", "Note")),
    (("Task", "upstream_tasks", "Task"), ("Task", "downstream_tasks", "Task")),
] + [(("Note", "note_links", t), (t, "notes", "Note")) for t in _NOTE_LINK_TYPES]


def _build_inverse() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for (st, sf, tt), (tt2, tf, st2) in _INVERSE_PAIRS:
        assert tt == tt2 and st == st2, (st, sf, tt)
        out[(st, sf, tt)] = tf
        out[(tt, tf, st)] = sf
    return out


#: (source_type, source_field, target_type) -> the field on target_type that mirrors it.
#: Both directions are listed, so a write to either side can update the other.
INVERSE_FIELDS: dict[tuple[str, str, str], str] = _build_inverse()

#: System fields every type carries, in the site's usual position (first/last).
_SYSTEM_NAMES = {"id": "Id", "created_at": "Date Created", "updated_at": "Date Updated",
                 "created_by": "Created by", "updated_by": "Updated by"}


def _field(etype: str, spec: _F) -> FieldSchema:
    name, dt, display, extra = spec
    default = extra.get("default")
    if dt == "checkbox" and default is None:
        default = False
    fs = FieldSchema(
        entity_type=etype, name=name, data_type=dt, display_name=display,
        valid_types=tuple(extra.get("types", ())),
        valid_values=tuple(extra.get("values", ())),
        default_value=default,
        editable=extra.get("editable", True),
    )
    fs.to_site()  # materialise the site's FIELD_DEF so it is served verbatim
    return fs


def build_schema() -> Schema:
    """A fresh, independent copy of the built-in studio schema (callers may mutate it)."""
    all_types = sorted(t for t, _, _ in _TYPES)
    entities: dict[str, EntitySchema] = {}
    for etype, display, specs in _TYPES:
        specs = [
            _f("id", "number", "Id", editable=False),
            *specs,
            _f("created_at", "date_time", _SYSTEM_NAMES["created_at"], editable=False),
            _f("updated_at", "date_time", _SYSTEM_NAMES["updated_at"], editable=False),
            _f("created_by", "entity", _SYSTEM_NAMES["created_by"], types=USER_TYPES,
               editable=False),
            _f("updated_by", "entity", _SYSTEM_NAMES["updated_by"], types=USER_TYPES,
               editable=False),
        ]
        if etype == "EventLogEntry":
            specs = [(n, dt, d, {**x, "types": tuple(all_types)})
                     if (n == "entity") else (n, dt, d, x) for n, dt, d, x in specs]
        ent = EntitySchema(etype, display)
        for spec in specs:
            ent.fields[spec[0]] = _field(etype, spec)
        ent.raw = ent.to_site()
        entities[etype] = ent
    return Schema(entities)
