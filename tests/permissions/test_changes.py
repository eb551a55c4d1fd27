"""A change of a user's group, of a project's users or of a Group's users reaches the cache with the events.

The cache runs with the default policy (the site's default roles) and follows the site's
event log; after `sgcache ctrl poll` a user sees what the site now shows them. Grants are
not reused between requests here (SGCACHE_PERMISSIONS_TTL=0): otherwise a change can take
that long more.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cache.dbs import BACKENDS, new_db_url
from tests.support.procs import MockProcess, running_mock
from tests.sync.support import CacheEnv, short_dir


@pytest.fixture(params=BACKENDS)
def site_and_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MockProcess, str, CacheEnv]]:
    with running_mock("--demo", "300") as mock:
        data = short_dir()
        for url in new_db_url(request.param, tmp_path):
            cache = CacheEnv(mock, url, data, extra_env={"SGCACHE_POLL_INTERVAL": "3600",
                                                         "SGCACHE_SCAN_INTERVAL": "3600",
                                                         "SGCACHE_PERMISSIONS_TTL": "0"})
            cache.prime()
            try:
                served = cache.serve()
                cache.ctrl("poll")
                yield mock, served, cache
            finally:
                cache.stop()
                shutil.rmtree(data, ignore_errors=True)


def _call(url: str, auth: dict[str, Any], params: dict[str, Any]) -> Any:
    r = httpx.post(url + "/api3/json", json={"method_name": "read", "params": [auth, params]}, timeout=60)
    return r.json()


def _passed(cache_url: str) -> int:
    """Reads the cache passed through (its own count: the site also sees the cache's
    background reads, such as the status sampler's look at the end of the event log)."""
    n = 0.0
    for line in httpx.get(cache_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("sgcache_requests_total{") and 'method="read"' in line and 'outcome="passthrough"' in line:
            n += float(line.rsplit(" ", 1)[1])
    return int(n)


def _same_and_local(mock: MockProcess, cache_url: str, auth: dict[str, Any], params: dict[str, Any]) -> Any:
    """The cache's answer, which must be the site's and must not have been passed through."""
    before = _passed(cache_url)
    got = _call(cache_url, auth, params)
    assert _passed(cache_url) == before, "passed through"
    assert got == _call(mock.url, auth, params)
    return got["results"]["entities"]


def _rule_set(sg: Any, code: str) -> dict[str, Any]:
    return sg.find_one("PermissionRuleSet", [["code", "is", code]])


def test_group_and_project_changes_show_within_one_poll(site_and_cache: tuple[MockProcess, str, CacheEnv]) -> None:
    mock, url, cache = site_and_cache
    sg = mock.sg()
    n_projects = len(sg.find("Project", []))
    artist = next(u for u in sg.find("HumanUser", [["permission_rule_set.PermissionRuleSet.code", "is", "Artist"],
                                                   ["sg_status_list", "is", "act"]], ["login", "projects"])
                  if len(u["projects"]) < n_projects)
    auth = {"script_name": mock.script_name, "script_key": mock.script_key, "sudo_as_login": artist["login"]}
    projects = {"type": "Project", "return_fields": ["name"]}
    shots = {"type": "Shot", "return_fields": ["code", "sg_status_list"], "filters": {
        "logical_operator": "and", "conditions": []}, "paging": {"entities_per_page": 500, "current_page": 1}}
    _call(url, auth, projects)  # the caller verified by the site once

    mine = {p["id"] for p in artist["projects"]}
    seen = _same_and_local(mock, url, auth, projects)
    assert {p["id"] for p in seen} == mine
    n_shots = len(_same_and_local(mock, url, auth, shots))

    # Added to a project: its project and shots are visible after one poll.
    other = next(p for p in sg.find("Project", [], ["users"]) if p["id"] not in mine)
    sg.update("Project", other["id"], {"users": [{"type": "HumanUser", "id": artist["id"]}]},
              multi_entity_update_modes={"users": "add"})
    cache.ctrl("poll")
    assert {p["id"] for p in _same_and_local(mock, url, auth, projects)} == mine | {other["id"]}
    assert len(_same_and_local(mock, url, auth, shots)) > n_shots

    # Moved to Vendor: only shots with a task assigned to them (or their groups).
    sg.update("HumanUser", artist["id"], {"permission_rule_set": _rule_set(sg, "Vendor")})
    cache.ctrl("poll")
    vendor_shots = _same_and_local(mock, url, auth, shots)
    assert len(vendor_shots) < n_shots

    # Joined a Group: a shot with a task assigned to that Group is visible after one poll.
    seen = {s["id"] for s in vendor_shots}
    in_groups = {g["id"] for g in sg.find_one("HumanUser", [["id", "is", artist["id"]]], ["groups"])["groups"]}
    task = next(t for t in sg.find("Task", [["project", "in", [{"type": "Project", "id": p} for p in mine | {other["id"]}]],
                                            ["entity", "is_not", None]], ["entity", "task_assignees"])
                if t["entity"]["type"] == "Shot" and t["entity"]["id"] not in seen
                and any(a["type"] == "Group" and a["id"] not in in_groups for a in t["task_assignees"]))
    group = next(a for a in task["task_assignees"] if a["type"] == "Group" and a["id"] not in in_groups)
    sg.update("Group", group["id"], {"users": [{"type": "HumanUser", "id": artist["id"]}]},
              multi_entity_update_modes={"users": "add"})
    cache.ctrl("poll")
    assert task["entity"]["id"] in {s["id"] for s in _same_and_local(mock, url, auth, shots)}

    # Moved to Admin: everything.
    sg.update("HumanUser", artist["id"], {"permission_rule_set": _rule_set(sg, "Admin")})
    cache.ctrl("poll")
    assert len(_same_and_local(mock, url, auth, projects)) == n_projects

    # Moved to a group the policy does not name (Manager, by default): the site answers.
    sg.update("HumanUser", artist["id"], {"permission_rule_set": _rule_set(sg, "Manager")})
    cache.ctrl("poll")
    before = _passed(url)
    assert _call(url, auth, projects) == _call(mock.url, auth, projects)
    assert _passed(url) == before + 1
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert 'reason="permission"' in metrics, json.dumps(metrics[-2000:])
    # the status page says which groups are answered how
    groups = httpx.get(url + "/status.json", timeout=10).json()["permissions"]["groups"]
    assert groups["Artist"] == {"policy": "assigned_projects"} and groups["*"] == {"policy": "passthrough"}
