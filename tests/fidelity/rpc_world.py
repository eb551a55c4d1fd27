"""A world for the note-thread and text-search differential tests (one per backend).

A demo site plus threads made through the real `shotgun_api3` client (replies by the
script and by people, attachments, deleted items, ties in `created_at`, notes on several
entity types), a cache of it that knows the mock's permission roles, and a way to tell
whether the cache answered a call itself: the site's own request counter per method.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import shotgun_api3

from tests.cache.dbs import new_db_url
from tests.e2e.harness import Cache, Site, normalize, start_cache, start_site

#: The mock's roles as a studio would write them (the script is an API Admin: `full`).
POLICY = {"Admin": "full", "API Admin": "full", "*": {"policy": "assigned_projects"}}
WORDS = ["alpha", "Beta", "GAMMA", "Straße", "café", "İstanbul", "naïve", "x_y%z", "sh010", "thread"]


@dataclass
class RpcWorld:
    site: Site
    cache: Cache
    notes: list[int] = field(default_factory=list)
    #: notes made so that the cache must answer them itself (script replies, distinct seconds)
    local_notes: list[int] = field(default_factory=list)
    #: notes with a reply by a person (whose image the cache does not hold)
    person_notes: list[int] = field(default_factory=list)
    #: notes with a Reply and an Attachment created in the same second
    tie_notes: list[int] = field(default_factory=list)
    artist: str | None = None

    def sg_site(self, **kw: Any) -> shotgun_api3.Shotgun:
        return self.site.sg(**kw)

    def sg_cache(self, **kw: Any) -> shotgun_api3.Shotgun:
        return self.cache.sg(self.site, **kw)

    def site_calls(self, method: str) -> int:
        stats = httpx.get(self.site.admin_url + "/stats", timeout=10).json()
        return int(stats.get("requests", {}).get(method, 0))

    def both(self, method: str, call: Any) -> tuple[Any, Any, bool]:
        """`call(sg)` against the site and through the cache: (site's, cache's, cache went to the site)."""
        want = _outcome(call, self.sg_site())
        before = self.site_calls(method)
        got = _outcome(call, self.sg_cache())
        return want, got, self.site_calls(method) > before


def _outcome(call: Any, sg: shotgun_api3.Shotgun) -> Any:
    try:
        return normalize(call(sg))
    except shotgun_api3.Fault as e:
        return {"fault": str(e)}


def seed_threads(site: Site, world: RpcWorld, n_notes: int = 36, seed: int = 11) -> None:
    """Threads of every shape, through the real client, with `created_at` set as imports do."""
    rng = random.Random(seed)
    sg = site.sg()
    project = sg.find_one("Project", [], ["name"])
    people = sg.find("HumanUser", [["sg_status_list", "is", "act"]], ["name"], limit=6)
    targets = (sg.find("Shot", [], [], limit=6) + sg.find("Asset", [], [], limit=6)
               + sg.find("Version", [], [], limit=4))
    clock = [dt.datetime(2026, 3, 1, 9, 0, 0, tzinfo=dt.UTC)]

    def at(tie: bool = False) -> dt.datetime:
        if not tie:
            clock[0] += dt.timedelta(seconds=rng.randint(1, 90))
        return clock[0]

    for n in range(n_notes):
        shape = n % 4  # 0, 1: script replies and attachments; 2: a person replies; 3: ties, deletions
        note = sg.create("Note", {"project": project, "subject": f"thread {n} {rng.choice(WORDS)}",
                                  "content": f"{rng.choice(WORDS)} note {n}", "created_at": at(),
                                  "note_links": [rng.choice(targets)]})
        world.notes.append(note["id"])
        items: list[tuple[str, int]] = []
        stamps: dict[tuple[str, int], dt.datetime] = {}
        by_person: dict[str, Any] | None = None
        for k in range(rng.randint(0, 4)):
            tie = shape == 3 and k > 0 and rng.random() < 0.6
            if rng.random() < 0.5:
                data = {"entity": note, "content": f"reply {k} {rng.choice(WORDS)}", "created_at": at(tie)}
                if shape == 2 and not by_person:
                    data["user"] = by_person = rng.choice(people)
                items.append(("Reply", sg.create("Reply", data)["id"]))
                stamps[items[-1]] = clock[0]
            else:
                att = sg.create("Attachment", {"project": project, "filename": f"ref_{n}_{k}.jpg",
                                               "created_at": at(tie)})
                sg.update("Note", note["id"], {"attachments": [att]},
                          multi_entity_update_modes={"attachments": "add"})
                items.append(("Attachment", att["id"]))
                stamps[items[-1]] = clock[0]
        if shape == 3 and items and rng.random() < 0.7:
            gone = rng.choice(items)
            sg.delete(*gone)
            del stamps[gone]
        if any(a[0] != b[0] and stamps[a] == stamps[b] for a in stamps for b in stamps):
            world.tie_notes.append(note["id"])
        if shape in (0, 1):
            world.local_notes.append(note["id"])
        if by_person:
            world.person_notes.append(note["id"])
    artists = sg.find("HumanUser", [["permission_rule_set.PermissionRuleSet.code", "is", "Artist"],
                                    ["sg_status_list", "is", "act"]], ["login"], limit=1)
    world.artist = artists[0]["login"] if artists else None


def start_rpc_world(db_url: str, tmp: Path, **env: str) -> Iterator[RpcWorld]:
    site = start_site(demo=40)
    cache = None
    try:
        world = RpcWorld(site, None)  # type: ignore[arg-type]
        seed_threads(site, world)
        cache = start_cache(site, db_url, tmp, "--no-sync", SGCACHE_AUTH_TTL="86400",
                            SGCACHE_PERMISSIONS=json.dumps(POLICY), **env)
        world.cache = cache
        yield world
    finally:
        if cache is not None:
            cache.stop()
        site.stop()


def rpc_worlds(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcWorld]:
    """The body of each test module's `rpc_world` fixture (module-scoped, one per backend)."""
    tmp = tmp_path_factory.mktemp("rpc")
    for url in new_db_url(backend, tmp):
        yield from start_rpc_world(url, tmp)
