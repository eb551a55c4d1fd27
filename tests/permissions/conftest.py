"""A demo site and a cache of it that knows the site's permission roles (one per backend).

The policy below is how the mock's roles (sgcache/mock/permissions.py) are written for
the cache, as a studio would write theirs: the default roles, Manager with scripts hidden,
and a custom `Client` role hiding Notes and people's e-mail. The mock shows every role
the rows of types outside projects, so those types are `open_types` here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sgcache.mock.builtin_schema import build_schema
from tests.cache.dbs import BACKENDS, new_db_url
from tests.e2e.harness import start_cache, start_site
from tests.fidelity.world import World, load_pools

#: Built-in types without a project: every role of the mock sees all their rows.
OPEN_TYPES = sorted(t for t, e in build_schema().entities.items()
                    if "project" not in e.fields and t != "Project")
POLICY: dict[str, Any] = {
    "Admin": "full",
    "API Admin": "full",
    "Manager": {"policy": "full", "hidden_types": ["ApiUser"]},
    "Artist": {"policy": "assigned_projects", "open_types": OPEN_TYPES},
    "Vendor": {"policy": "vendor", "open_types": OPEN_TYPES},
    "Client": {"policy": "assigned_projects", "open_types": OPEN_TYPES, "hidden_types": ["Note"],
               "hidden_fields": ["HumanUser.email"]},
}
ROLES = ["Admin", "Manager", "Artist", "Vendor", "Client"]


@dataclass
class UserWorld(World):
    """The world as one user sees it: the site's script acting as `login` (sudo)."""

    login: str | None = None

    def auth(self) -> dict[str, str]:
        auth = super().auth()
        if self.login:
            auth["sudo_as_login"] = self.login
        return auth

    def as_user(self, login: str) -> UserWorld:
        return dataclasses.replace(self, login=login)


def users_by_role(world: World) -> dict[str, list[dict[str, Any]]]:
    """Active people of each role, the ones with most task assignments first."""
    res = world.call(world.site.url, "read", {
        "type": "HumanUser", "return_fields": ["login", "permission_rule_set", "sg_status_list"],
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "sg_status_list", "relation": "is", "values": ["act"]}]},
        "paging": {"entities_per_page": 500, "current_page": 1}})
    tasks = world.call(world.site.url, "read", {
        "type": "Task", "return_fields": ["task_assignees"], "paging": {"entities_per_page": 5000, "current_page": 1}})
    n: dict[int, int] = {}
    for t in tasks["results"]["entities"]:
        for a in t["task_assignees"]:
            if a["type"] == "HumanUser":
                n[a["id"]] = n.get(a["id"], 0) + 1
    out: dict[str, list[dict[str, Any]]] = {}
    for u in res["results"]["entities"]:
        rs = u["permission_rule_set"]
        if rs:
            out.setdefault(rs["name"], []).append(u)
    for users in out.values():
        users.sort(key=lambda u: (-n.get(u["id"], 0), u["id"]))
    return out


def start_permission_world(db_url: str, tmp: Path, demo: int = 400, **env: str) -> Iterator[UserWorld]:
    site = start_site(demo=demo)
    cache = None
    try:
        cache = start_cache(site, db_url, tmp, "--no-sync", SGCACHE_AUTH_TTL="86400",
                            SGCACHE_PERMISSIONS=json.dumps(POLICY), **env)
        world = UserWorld(site, cache, build_schema())
        load_pools(world)
        yield world
    finally:
        if cache is not None:
            cache.stop()
        site.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def perm_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserWorld]:
    tmp = tmp_path_factory.mktemp("permissions")
    for url in new_db_url(request.param, tmp):
        yield from start_permission_world(url, tmp)
