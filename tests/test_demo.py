"""The demo site generator: deterministic, sized as asked, and valid against the schema."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from sgcache.mock.builtin_schema import INVERSE_FIELDS, build_schema
from sgcache.mock.demo import DEMO_CREDENTIALS, generate
from sgcache.mock.filters import check_scalar
from sgcache.protocol.errors import Fault
from sgcache.protocol.values import parse_datetime

SCHEMA = build_schema()
Records = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def small() -> Records:
    return list(generate(300))


@pytest.fixture(scope="module")
def medium() -> Records:
    return list(generate(20_000, seed=7))


def _index(records: Records) -> dict[tuple[str, int], dict[str, Any]]:
    index = {(t, r["id"]): r for t, r in records}
    assert len(index) == len(records), "duplicate (type, id)"
    return index


def _targets(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def test_deterministic() -> None:
    assert list(generate(300, seed=3)) == list(generate(300, seed=3))
    assert list(generate(300, seed=3)) != list(generate(300, seed=4))


@pytest.mark.parametrize("size", [300, 20_000])
def test_size_roughly_honoured(size: int) -> None:
    n = sum(1 for _ in generate(size))
    assert 0.8 * size <= n <= 1.2 * size


def test_ids_are_sequential_per_type(medium: Records) -> None:
    ids: dict[str, list[int]] = defaultdict(list)
    for t, r in medium:
        ids[t].append(r["id"])
    for t, got in ids.items():
        # 1..n with no gaps, and streamed in id order (bulk loaders can append).
        assert got == list(range(1, len(got) + 1)), t


@pytest.mark.parametrize("which", ["small", "medium"])
def test_every_value_valid_for_its_field(which: str, request: pytest.FixtureRequest) -> None:
    records: Records = request.getfixturevalue(which)
    for t, r in records:
        assert t in SCHEMA
        for name, v in r.items():
            if name == "__retired":
                assert v is True
                continue
            fs = SCHEMA.get_field(t, name)
            assert fs is not None, (t, name)
            assert fs.is_stored, (t, name)
            dt = fs.data_type
            where = f"{t}.{name}"
            if dt == "checkbox":
                assert isinstance(v, bool), where
            if v is None:
                continue
            if dt in ("multi_entity", "addressing", "tag_list"):
                assert isinstance(v, list), where
                for item in v:
                    check_scalar(dt, item, "read", where)
            elif dt in ("url", "serializable"):
                assert isinstance(v, dict), where
            else:
                check_scalar(dt, v, "read", where)
            if fs.is_link:
                for link in _targets(v):
                    assert set(link) == {"type", "id"}, where
                    assert link["type"] in fs.valid_types, where
            if fs.valid_values:
                assert v in fs.valid_values, (where, v)
            if dt == "color":
                parts = v.split(",")
                assert v == "pipeline_step" or (len(parts) == 3 and all(0 <= int(p) < 256 for p in parts))


def test_check_scalar_rejects_bad_value() -> None:
    with pytest.raises(Fault):
        check_scalar("date", "2024-13-01", "read", "x")


@pytest.mark.parametrize("which", ["small", "medium"])
def test_links_point_to_yielded_entities(which: str, request: pytest.FixtureRequest) -> None:
    records: Records = request.getfixturevalue(which)
    index = _index(records)
    seen: set[tuple[str, int]] = set()
    for t, r in records:
        seen.add((t, r["id"]))
        for name, v in r.items():
            fs = SCHEMA.get_field(t, name)
            if fs is None or not fs.is_link:
                continue
            for link in _targets(v):
                key = (link["type"], link["id"])
                assert key in index, (t, r["id"], name, key)
                if not fs.is_multi and not (t == "PermissionRuleSet" and key == ("HumanUser", 1)):
                    # Single links point backwards in the stream (targets first), but for
                    # the first admin's rule sets: each needs the other, as on the site.
                    assert key in seen, (t, r["id"], name, key)


@pytest.mark.parametrize("which", ["small", "medium"])
def test_inverse_pairs_consistent(which: str, request: pytest.FixtureRequest) -> None:
    records: Records = request.getfixturevalue(which)
    index = _index(records)
    checked = Counter()
    for t, r in records:
        for name, v in r.items():
            fs = SCHEMA.get_field(t, name)
            if fs is None or not fs.is_link:
                continue
            for link in _targets(v):
                inverse = INVERSE_FIELDS.get((t, name, link.get("type")))
                if inverse is None:
                    continue
                target = index[(link["type"], link["id"])]
                assert inverse in target, (t, r["id"], name, link)
                back = _targets(target[inverse])
                assert {"type": t, "id": r["id"]} in back, (t, r["id"], name, link, inverse)
                checked[(t, name)] += 1
    # The main pairs are exercised in both directions.
    for key in [("Task", "entity"), ("Shot", "tasks"), ("Shot", "sg_sequence"), ("Sequence", "shots"),
                ("Shot", "assets"), ("Asset", "shots"), ("Playlist", "versions"),
                ("Version", "playlists"), ("Reply", "entity"), ("Note", "replies"),
                ("HumanUser", "groups"), ("Group", "users"), ("Note", "note_links")]:
        assert checked[key], key


def test_timestamps_in_range_and_increasing(medium: Records) -> None:
    last = None
    for t, r in medium:
        created, updated = parse_datetime(r["created_at"]), parse_datetime(r["updated_at"])
        assert created is not None and updated is not None
        assert 2024 <= created.year <= 2026 and 2024 <= updated.year <= 2026
        assert updated >= created
        if last is not None:
            assert created >= last
        last = created
        assert r["created_by"]["type"] in ("HumanUser", "ApiUser")


def test_realistic_content(medium: Records) -> None:
    by_type = Counter(t for t, _ in medium)
    assert by_type["Shot"] > by_type["Sequence"] > 0
    assert max(by_type, key=by_type.get) in ("Task", "Shot")
    retired = sum(1 for _, r in medium if r.get("__retired"))
    assert 0.01 * len(medium) < retired < 0.04 * len(medium)
    projects = [r for t, r in medium if t == "Project"]
    assert sum(p["archived"] for p in projects) == 1
    texts = [v for _, r in medium for v in r.values() if isinstance(v, str)]
    assert any(not s.isascii() for s in texts)
    assert any("日本" in s for s in texts)
    assert any(r.get("tag_list") for _, r in medium)
    # Every nullable stored data type has some nulls.
    null_types = {SCHEMA.get_field(t, k).data_type for t, r in medium for k, v in r.items()
                  if v is None and k != "__retired"}
    for dt in ("text", "number", "float", "currency", "percent", "duration", "timecode",
               "date", "date_time", "entity", "url", "image", "color", "list", "status_list",
               "footage", "uuid", "serializable"):
        assert dt in null_types, dt


def test_small_site_has_retired_rows(small: Records) -> None:
    assert any(r.get("__retired") for _, r in small)


def test_demo_credentials(small: Records) -> None:
    name, key = DEMO_CREDENTIALS
    assert len(key) == 40 and int(key, 16) >= 0
    scripts = [r for t, r in small if t == "ApiUser" and r["firstname"] == name]
    assert len(scripts) == 1
    assert scripts[0]["salted_password"] == key
    assert scripts[0]["generate_events"] is True
    assert not scripts[0].get("__retired")
    # The targets that everything links to come first.
    first_types = [t for t, _ in small[:12] if t != "PermissionRuleSet"]  # the accounts' groups, then accounts
    assert small[0][0] == "PermissionRuleSet" and first_types[0] == "HumanUser"


def test_image_and_file_urls_are_paths_on_the_site_itself(small: Records) -> None:
    """The mock answers them with its own address, so a cache copying the demo's thumbnails
    (or a browser showing them) talks to the mock on 127.0.0.1, never to a host on the net."""
    seen = 0
    for _etype, rec in small:
        for value in rec.values():
            urls = [value] if isinstance(value, str) and "/thumbnail/" in value else \
                [value["url"]] if isinstance(value, dict) and isinstance(value.get("url"), str) else []
            for url in urls:
                if url.startswith("file://"):  # a local file link, as a studio's publishes have
                    continue
                assert url.startswith("/") and "://" not in url, url
                seen += 1
    assert seen > 50
