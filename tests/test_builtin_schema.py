"""The built-in studio schema: loadable, realistic and self-consistent."""

from __future__ import annotations

import json

from sgcache.mock.builtin_schema import INVERSE_FIELDS, build_schema
from sgcache.mock.names import display_field
from sgcache.schema import LINK_TYPES, Schema
from tests.conftest import site_schema_fixture

REQUIRED_TYPES = (
    "Project", "Sequence", "Shot", "Asset", "Task", "Step", "TaskTemplate", "Version",
    "PublishedFile", "PublishedFileType", "Note", "Reply", "Playlist", "HumanUser",
    "ApiUser", "Group", "Attachment", "Page", "EventLogEntry", "Tag", "LocalStorage",
    "CustomEntity01",
)


def _data_types(schema: Schema) -> set[str]:
    return {fs.data_type for e in schema.entities.values() for fs in e.fields.values()}


def test_round_trips_through_json() -> None:
    schema = build_schema()
    data = schema.to_json()
    again = Schema.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data
    for etype, ent in schema.entities.items():
        for fname, fs in ent.fields.items():
            other = again.get_field(etype, fname)
            assert other is not None
            assert (other.data_type, other.display_name, other.valid_types, other.valid_values,
                    other.default_value, other.editable) == (
                fs.data_type, fs.display_name, fs.valid_types, fs.valid_values,
                fs.default_value, fs.editable)
        assert again[etype].display_name == ent.display_name


def test_build_returns_independent_copies() -> None:
    a, b = build_schema(), build_schema()
    a["Shot"].fields.pop("code")
    assert "code" in b["Shot"].fields


def test_required_types_and_system_fields() -> None:
    schema = build_schema()
    for etype in REQUIRED_TYPES:
        assert etype in schema
        ent = schema[etype]
        assert ent.fields["id"].data_type == "number"
        for f in ("created_at", "updated_at"):
            assert ent.fields[f].data_type == "date_time"
        for f in ("created_by", "updated_by"):
            assert ent.fields[f].data_type == "entity"
            assert set(ent.fields[f].valid_types) == {"HumanUser", "ApiUser"}


def test_every_site_data_type_is_present() -> None:
    site = Schema.load(site_schema_fixture())
    missing = _data_types(site) - _data_types(build_schema())
    assert not missing


def test_extra_data_types_present() -> None:
    assert {"addressing", "currency", "timecode", "footage", "pivot_column"} <= _data_types(build_schema())


def test_name_field_for_every_type() -> None:
    schema = build_schema()
    for etype, ent in schema.entities.items():
        nf = display_field(etype, ent)
        assert nf is not None and nf in ent.fields, etype
        assert ent.fields[nf].data_type == "text"


def test_links_name_known_types_and_lists_have_values() -> None:
    schema = build_schema()
    for etype, ent in schema.entities.items():
        for fs in ent.fields.values():
            if fs.data_type in LINK_TYPES:
                assert fs.valid_types, (etype, fs.name)
                assert set(fs.valid_types) <= set(schema.types()), (etype, fs.name)
            if fs.data_type in ("list", "status_list"):
                assert fs.valid_values, (etype, fs.name)
                if fs.default_value is not None:
                    assert fs.default_value in fs.valid_values
            if fs.data_type == "tag_list":
                assert fs.valid_types == ("Tag",)


def test_inverse_fields_consistent() -> None:
    schema = build_schema()
    assert INVERSE_FIELDS
    for (stype, sfield, ttype), tfield in INVERSE_FIELDS.items():
        src = schema.get_field(stype, sfield)
        dst = schema.get_field(ttype, tfield)
        assert src is not None and src.is_link, (stype, sfield)
        assert dst is not None and dst.is_link, (ttype, tfield)
        assert ttype in src.valid_types, (stype, sfield, ttype)
        assert stype in dst.valid_types, (ttype, tfield, stype)
        # Both directions are listed.
        assert INVERSE_FIELDS[(ttype, tfield, stype)] == sfield
    for key in [("Task", "entity", "Shot"), ("Shot", "sg_sequence", "Sequence"),
                ("Shot", "assets", "Asset"), ("Playlist", "versions", "Version"),
                ("Reply", "entity", "Note"), ("HumanUser", "groups", "Group")]:
        assert key in INVERSE_FIELDS


def test_realistic_details() -> None:
    schema = build_schema()
    assert schema.get_field("ApiUser", "generate_events").default_value is True
    assert schema.get_field("Project", "archived").default_value is False
    assert {"wtg", "ip", "fin", "hld", "omt"} <= set(schema.get_field("Shot", "sg_status_list").valid_values)
    assert schema.get_field("Shot", "step_0").data_type == "pivot_column"
    assert not schema.get_field("Shot", "step_0").is_stored
    assert set(schema.get_field("EventLogEntry", "entity").valid_types) == set(schema.types())
    site = schema.to_schema_read()["Shot"]["sg_sequence"]
    assert site["properties"]["valid_types"]["value"] == ["Sequence"]
    assert site["data_type"]["value"] == "entity"
