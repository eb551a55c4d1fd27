"""Small pure pieces of the operations code, stated one behaviour at a time."""

from __future__ import annotations

import logging

import pytest

from sgcache.serve.metrics import REASONS, Metrics, caller_of, passthrough_reason
from sgcache.serve.status import _thin
from sgcache.sync.validate import wire_filters


@pytest.mark.parametrize("reason, label", [
    ("uncached entity type 'Foo'", "uncached_type"),
    ("uncached field Shot.sg_x in return_fields", "uncached_field"),
    ("field Shot.code is still being backfilled", "not_ready"),
    ("entity type Shot, Task is being rebuilt", "not_ready"),
    ("entity type Shot is not primed by a full scan yet", "not_ready"),
    ("time-relative relation in_last is answered by the site", "time_relative"),
    ("relation name_contains on tag_list is not answered locally", "relation"),
    ("link target type CustomEntity09 of Shot.x is not cached", "link_target"),
    ("unsupported read params: additional_filter_presets", "params"),
    ("page size 9000 above 5000", "paging"),
    ("status_list over tag_list field tag_list", "summary"),
    ("invalid request, site decides: bad", "invalid"),
    ("method", "method"),
    ("return fields through more than 6 links: the site decides", "limits"),
    ("filter path through more than 6 links: the site decides", "limits"),
    ("filters over 500 conditions or 30000 values: the site decides", "limits"),
    ("more than 1000 return fields: the site decides", "limits"),
    ("more than 64 tables in one join on SQLite: the site decides", "limits"),
    ("filter text holding NUL: the site decides", "nul_text"),
    ("EventLogEntry.meta withheld from the cache", "withheld"),
    ("something new", "other"),
])
def test_passthrough_reasons_collapse_to_a_few_labels(reason: str, label: str) -> None:
    assert passthrough_reason(reason) == label


def test_the_label_set_is_read_off_the_table() -> None:
    assert len({label for label, _ in REASONS}) == len(REASONS)


def test_caller_is_the_script_or_user_and_never_a_secret() -> None:
    assert caller_of({"script_name": "pipe", "script_key": "s3cret", "sudo_as_login": "ann"}) == ("pipe", "ann")
    assert caller_of({"user_login": "bob", "user_password": "pw"}) == ("bob", None)
    assert caller_of({"session_token": "tok"}) == ("session", None)
    assert caller_of(None) == ("-", None)


def test_a_request_log_line_carries_fields_but_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    with caplog.at_level(logging.INFO, logger="sgcache.access"):
        m.observe("read", "passthrough", 0.0123, reason="time-relative relation in_last is answered by the site",
                  entity_type="Shot", auth={"script_name": "pipe", "script_key": "s3cret", "sudo_as_login": "ann"})
    [rec] = caplog.records
    fields = rec.fields  # type: ignore[attr-defined]
    assert fields["method"] == "read" and fields["entity_type"] == "Shot" and fields["outcome"] == "passthrough"
    assert fields["reason"] == "time_relative" and fields["caller"] == "pipe" and fields["sudo_as_login"] == "ann"
    assert fields["ms"] == 12.3
    assert "s3cret" not in rec.getMessage() and "s3cret" not in str(fields)
    assert m.total == 1 and m.passed == 1 and m.recent[-1].entity_type == "Shot"


def test_filters_in_shotgun_api3_list_form_become_the_wire_form() -> None:
    assert wire_filters([["code", "is", "x"], ["id", "in", [1, 2]]]) == {"logical_operator": "and", "conditions": [
        {"path": "code", "relation": "is", "values": ["x"]}, {"path": "id", "relation": "in", "values": [1, 2]}]}
    assert wire_filters({"filter_operator": "any", "filters": [["sg_cut_in", "between", 1, 5]]}) == {
        "logical_operator": "or", "conditions": [{"path": "sg_cut_in", "relation": "between", "values": [1, 5]}]}
    wire = {"logical_operator": "and", "conditions": []}
    assert wire_filters(wire) is wire and wire_filters([]) is None


def test_thinning_the_history_keeps_the_newest_point() -> None:
    pts = list(range(1000))
    thin = _thin(pts, 360)
    assert len(thin) <= 360 and thin[-1] == 999
    assert _thin([1, 2], 360) == [1, 2] and _thin([], 360) == []
