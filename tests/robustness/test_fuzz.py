"""Hypothesis throws generated malformed api3 requests at a running `sgcache serve`.

Every answer must be HTTP 200 with a JSON body holding `results` or a Fault; the
server must stay up; and a checksum of every cached table must not change.
CI runs a bounded number of examples; set SGCACHE_FUZZ_EXAMPLES (e.g. 10000) for a
long run. Writes are only ever sent with credentials the site refuses, so the site's
data (and therefore the cache's) cannot legitimately change during the run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..e2e.harness import Cache, Site
from .servers import Primed, checksum, post_raw, serve

EXAMPLES = int(os.environ.get("SGCACHE_FUZZ_EXAMPLES", "150"))

INJECTIONS = ["'; DROP TABLE \"Shot\"; --", "code\" OR 1=1 --", "x' OR '1'='1", "1; DELETE FROM Task",
              "%", "_", "\\", "\x00", "code.Shot.id", "sg_sequence.Sequence.code; --", "id) OR (1=1",
              "Shot__id", "__retired", "_sgcache_fields", "code--", "🙂", "é" * 300]
TYPES = ["Shot", "Task", "Version", "Asset", "HumanUser", "Project", "Note", "Sequence", "EventLogEntry",
         "NoSuchType", "shot", "CustomEntity99", ""]
FIELDS = ["id", "code", "sg_status_list", "sg_sequence", "sg_cut_in", "description", "tasks", "assets",
          "project", "created_at", "updated_at", "created_by", "tag_list", "image", "content", "entity",
          "step", "task_assignees", "start_date", "name", "login", "sg_frame_rate",
          "sg_sequence.Sequence.code", "entity.Shot.code", "tasks.Task.content", "project.Project.name",
          "created_by.HumanUser.login", "entity.Shot.sg_sequence.Sequence.code", "sg_nope", "Shot.code"]
RELATIONS = ["is", "is_not", "less_than", "greater_than", "contains", "not_contains", "starts_with",
             "ends_with", "between", "not_between", "in", "not_in", "type_is", "type_is_not", "in_last",
             "not_in_last", "in_next", "in_calendar_day", "name_contains", "name_is", "is_ANY", "IS", ""]

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(INJECTIONS) | st.sampled_from(["2024-01-01", "2024-01-01T00:00:00Z", "ip", "fin"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6) | st.sampled_from(["type", "id", "name"]),
                                             inner, max_size=4), max_leaves=10)
entity_links = st.fixed_dictionaries({"type": st.sampled_from(TYPES) | st.text(max_size=6),
                                      "id": st.integers(-5, 2**40) | json_values})
names = st.sampled_from(FIELDS) | st.sampled_from(INJECTIONS) | st.text(max_size=16)
condition = (st.fixed_dictionaries(
    {"path": names, "relation": st.sampled_from(RELATIONS) | st.text(max_size=8),
     "values": st.lists(scalars | entity_links, max_size=3) | json_values})
    | json_values)
filters = st.recursive(condition, lambda inner: st.fixed_dictionaries(
    {"logical_operator": st.sampled_from(["and", "or", "AND", "xor"]) | json_values,
     "conditions": st.lists(inner, max_size=3) | json_values}), max_leaves=6)
sorts = st.lists(st.fixed_dictionaries({"field_name": names,
                                        "direction": st.sampled_from(["asc", "desc", "DESC", "up"]) | json_values}),
                 max_size=3) | json_values
paging = st.fixed_dictionaries({"entities_per_page": st.integers(-3, 10**7) | json_values,
                                "current_page": st.integers(-3, 10**7) | json_values}) | json_values
read_params = st.fixed_dictionaries({"type": st.sampled_from(TYPES) | json_values}, optional={
    "return_fields": st.lists(names, max_size=5) | json_values,
    "filters": filters,
    "sorts": sorts,
    "paging": paging,
    "return_only": st.sampled_from(["active", "retired", "all"]) | json_values,
    "include_archived_projects": json_values,
    "api_return_image_urls": json_values,
    "return_paging_info_without_counts": json_values,
    "additional_filter_presets": json_values,
})
# Reads the cache can answer locally, with values that are mostly of the right type:
# they reach the read engine and the database rather than stopping at validation.
texts = st.text(max_size=10) | st.sampled_from(INJECTIONS)
ints = st.integers(-2**33, 2**33) | st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, -2**63 - 1])
dates = st.dates().map(str) | st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")) | texts
links = st.fixed_dictionaries({"type": st.sampled_from(["Sequence", "Shot", "Task", "HumanUser", "Asset"]),
                               "id": st.integers(-2, 10**6)})
TEXT_RELS = ["is", "is_not", "contains", "not_contains", "starts_with", "ends_with", "in", "not_in"]
PLAUSIBLE: list[tuple[str, list[str], st.SearchStrategy[Any]]] = [
    ("code", TEXT_RELS, texts), ("description", TEXT_RELS, texts),
    ("sg_status_list", ["is", "is_not", "in", "not_in"], st.sampled_from(["ip", "fin", "wtg", ""]) | texts),
    ("id", ["is", "is_not", "less_than", "greater_than", "between", "in", "not_in"], ints),
    ("sg_cut_in", ["is", "is_not", "less_than", "greater_than", "between", "not_between", "in"], ints),
    ("sg_frame_rate", ["is", "less_than", "greater_than"], st.floats(allow_nan=False, allow_infinity=False) | ints),
    ("created_at", ["is", "less_than", "greater_than", "between"], dates),
    ("sg_sequence", ["is", "is_not", "in", "not_in", "type_is", "type_is_not", "name_contains"], links | texts),
    ("tasks", ["is", "is_not", "in", "not_in", "name_contains"], links | texts),
    ("tag_list", ["is", "is_not", "in"], texts),
    ("sg_sequence.Sequence.code", TEXT_RELS, texts), ("tasks.Task.content", TEXT_RELS, texts),
    ("created_by.HumanUser.login", TEXT_RELS, texts), ("project.Project.name", TEXT_RELS, texts),
]


def _values(relation: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Mostly the number of values the relation takes; sometimes anything."""
    n = (2, 2) if "between" in relation else (1, 3) if relation.endswith("in") else (1, 1)
    return st.lists(value, min_size=n[0], max_size=n[1]) | st.lists(json_values, max_size=2)


plausible_condition = st.sampled_from(PLAUSIBLE).flatmap(lambda p: st.sampled_from(p[1]).flatmap(
    lambda rel: st.fixed_dictionaries({"path": st.just(p[0]), "relation": st.just(rel),
                                       "values": _values(rel, p[2] | st.none())})))
plausible_filters = st.recursive(plausible_condition, lambda inner: st.fixed_dictionaries(
    {"logical_operator": st.sampled_from(["and", "or"]), "conditions": st.lists(inner, max_size=3)}),
    max_leaves=5).map(lambda f: f if "logical_operator" in f else {"logical_operator": "and", "conditions": [f]})
SHOT_FIELDS = [f for f in FIELDS if f not in ("sg_nope", "Shot.code", "content", "entity", "step", "login",
                                              "task_assignees", "start_date", "name", "entity.Shot.code",
                                              "entity.Shot.sg_sequence.Sequence.code")]
plausible_reads = st.fixed_dictionaries({
    "type": st.just("Shot"),
    "return_fields": st.lists(st.sampled_from(SHOT_FIELDS), max_size=6),
    "filters": plausible_filters,
    "sorts": st.lists(st.fixed_dictionaries({"field_name": st.sampled_from(SHOT_FIELDS),
                                             "direction": st.sampled_from(["asc", "desc"])}), max_size=2),
    "paging": st.fixed_dictionaries({"entities_per_page": st.integers(1, 600), "current_page": st.integers(1, 5)}),
}, optional={"return_only": st.sampled_from(["active", "retired"]),
             "include_archived_projects": st.booleans(),
             "return_paging_info_without_counts": st.booleans()})

SUMMARY_TYPES = ["record_count", "count", "sum", "maximum", "minimum", "average", "earliest", "latest",
                 "percentage", "status_percentage", "status_list", "checked", "unchecked", "median", ""]
GROUP_TYPES = ["exact", "entitytype", "firstletter", "tens", "hundreds", "day", "week", "month", "quarter",
               "year", "clustered_date", "bogus"]
plausible_summaries = st.fixed_dictionaries({
    "type": st.just("Shot"),
    "summaries": st.lists(st.fixed_dictionaries({"field": st.sampled_from(SHOT_FIELDS),
                                                 "type": st.sampled_from(SUMMARY_TYPES)},
                                                optional={"value": scalars}), min_size=1, max_size=3),
    "filters": plausible_filters,
}, optional={"grouping": st.lists(st.fixed_dictionaries({
    "field": st.sampled_from(SHOT_FIELDS), "type": st.sampled_from(GROUP_TYPES),
    "direction": st.sampled_from(["asc", "desc"])}), max_size=2),
    "include_archived_projects": st.booleans()})

OTHER_METHODS = ["summarize", "schema_read", "schema_field_read", "schema_entity_read", "text_search",
                 "note_thread_contents", "info", "get_session_token", "nonexistent", "READ", ""]
WRITES = ["create", "update", "delete", "revive", "batch", "schema_field_create", "schema_field_delete"]


def requests(auth: dict[str, str]) -> st.SearchStrategy[bytes]:
    """Bodies for /api3/json: mostly reads with valid credentials, plus every kind of junk."""
    refused = {"script_name": auth["script_name"], "script_key": "wrong-key"}
    auths = (st.sampled_from([auth, dict(auth, sudo_as_login="admin"), refused, {}])
             | json_values)

    def envelope(method: Any, params: list[Any]) -> bytes:
        return json.dumps({"method_name": method, "params": params}, ensure_ascii=False).encode("utf-8", "surrogatepass")

    reads = st.builds(lambda a, p: envelope("read", [a, p]),
                      st.sampled_from([auth, auth, auth, dict(auth, sudo_as_login="admin")]) | auths, read_params)
    local = st.builds(lambda p: envelope("read", [auth, p]), plausible_reads) | st.builds(
        lambda p: envelope("summarize", [auth, p]), plausible_summaries)
    others = st.builds(lambda m, a, p: envelope(m, [a, p]), st.sampled_from(OTHER_METHODS) | st.text(max_size=10),
                       auths, read_params | json_values)
    writes = st.builds(lambda m, p: envelope(m, [refused, p]), st.sampled_from(WRITES), json_values | read_params)
    envelopes = st.builds(lambda m, p: json.dumps({"method_name": m, "params": p}).encode(), json_values, json_values)
    blobs = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
    truncated = st.builds(lambda b, cut: b[:cut], reads, st.integers(0, 400))
    return st.one_of(local, local, local, reads, reads, others, writes, envelopes, blobs, truncated)


@pytest.fixture(scope="module")
def cache(primed_any: Primed) -> Iterator[Cache]:
    c = serve(primed_any, "--no-sync", max_body_bytes=1_000_000, max_json_depth=32)
    yield c
    c.stop()


@pytest.mark.timeout(300 + 2 * EXAMPLES)
def test_fuzzed_requests_never_break_the_cache(site: Site, primed_any: Primed, cache: Cache) -> None:
    before = checksum(primed_any.db_url)
    auth = {"script_name": site.script_name, "script_key": site.script_key}
    tally: Counter[str] = Counter()
    client = httpx.Client(timeout=60)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 1000,
              suppress_health_check=list(HealthCheck))
    @given(requests(auth))
    def one(body: bytes) -> None:
        r = post_raw(cache.url, body, client)
        tally[str(r.status_code)] += 1
        assert r.status_code == 200, (r.status_code, body[:500], r.text[:500])
        data = r.json()
        assert isinstance(data, dict) and ("results" in data or data.get("exception") is True
                                            or "version" in data), (body[:500], r.text[:500])
        tally["fault" if data.get("exception") else "results"] += 1

    try:
        one()
    finally:
        client.close()
        print(f"\nfuzz: {sum(tally[k] for k in tally if k.isdigit())} requests, {dict(tally)}")
    assert cache.proc is not None and cache.proc.poll() is None, "the server died"
    assert tally["500"] == 0
    assert checksum(primed_any.db_url) == before
    log = cache.log.read_text() if cache.log else ""
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
