"""A deterministic, realistic demo site for the mock, from a few hundred to a million rows.

Tests, benchmarks and demos all need a populated site that looks like a studio's:
projects of sequences and shots, tasks per pipeline step, versions, publishes,
notes with replies, playlists, assets shared between shots, a few retired rows and
awkward values (non-ASCII text, nulls, mixed case). `generate` streams records in
wire format so a million rows never sit in memory at once.

Both sides of every inverse pair (`builtin_schema.INVERSE_FIELDS`) are filled in.
To stream and still do that, the ids of a parent's children are allocated before
the parent is yielded (a shot and its tasks/versions/notes are planned together),
and the few many-to-many pairs that cross subtrees are planned per project up
front (assets ↔ shots) or gathered while streaming and yielded last (playlists).
Link targets come before the records linking to them, except for the few cycles
a real site has too (the first user created itself; users ↔ groups).

Retired rows carry `"__retired": True`; links to them are kept on both sides, as
the site stores them — reads are expected to hide retired targets.

Why one module of ~600 lines: the generator is one deterministic stream; its per-type
builders share the seeded random state and the id counters.
"""

from __future__ import annotations

import calendar
import random
import time
import uuid
from collections import defaultdict
from typing import Any, Iterator

from .builtin_schema import build_schema

#: The demo site's script credentials: ApiUser 1 (`firstname`, `salted_password`).
DEMO_CREDENTIALS: tuple[str, str] = ("sgcache_demo", "5572a481c31781d83498a66e0478ce76a8b5b417")

#: Image and file URLs of generated records are paths on the site itself ("/thumbnail/..."),
#: which the mock answers with its own address (127.0.0.1 in tests): a cache fetching the
#: demo's thumbnails talks to the mock, never to a host on the internet.
SITE_URL = ""

_START = calendar.timegm((2024, 1, 1, 0, 0, 0))
_END = calendar.timegm((2026, 10, 31, 0, 0, 0))

Record = dict[str, Any]

_FIRST = ("Zoë", "José", "Björn", "Hiroshi", "Ayşe", "Renée", "Liam", "Mei", "Olúwa", "Søren",
          "Anna", "Kenji", "François", "Priya", "Ünal", "Chloé", "Mateo", "Yuki", "Sam", "Jürgen")
_LAST = ("Müller", "García", "Tanaka", "O'Brien", "Nguyễn", "Dubois", "Smith", "de la Cruz",
         "Kowalski", "Sørensen", "Ito", "Łukasik", "McAllister", "Rossi", "Van Dijk", "Okafor")
_PHRASES = ("Fix the café sign in BG", "Über-wide lens — check distortion",
            "日本語のメモ: 修正してください", "CamelCase Check", "ALL CAPS NOTE", "lower case note",
            "Ready for Review", "naïve first pass on the matte", "Trim 4 frames at the head",
            "Client loves it 👍", "smörgåsbord of FX passes", "Déjà vu: same as last week",
            "Need more contrast in the sky", "rim light too hot", "Straße scene: add rain",
            "See attached ref — façade colours", "Temp comp, do NOT send", "approved by Ana-Lucía")
_PROJECTS = ("Big Buck Bünny", "Café Noir", "日本の夏", "Project Apex", "Zeta Commercial",
             "The Sørensen Files", "Über Drive", "Night Shift", "Mañana", "Pilot Episode")
_PROJECT_SLUGS = ("bbb", "cafe_noir", "nihon_natsu", "apex", "zeta", "sorensen", "uber_drive",
                  "night_shift", "manana", "pilot")
_GROUPS = ("Animators", "Lighting TDs", "Supervisors", "Production", "Comp Artists",
           "Modelers", "Client Reviewers", "Pipeline")
_TAGS = ("hero", "réshoot", "client_fav", "VFX", "日本", "urgent", "Sky Replacement", "wip",
         "CG", "retime")
#: (code, short_name, entity_type) of each pipeline step, in list order.
_STEPS = (("Layout", "LAY", "Shot"), ("Animation", "ANM", "Shot"), ("FX", "FX", "Shot"),
          ("Lighting", "LGT", "Shot"), ("Comp", "CMP", "Shot"), ("Model", "MOD", "Asset"),
          ("Rig", "RIG", "Asset"), ("Surface", "SRF", "Asset"), ("Editorial", "EDT", "Sequence"))
_SHOT_STEPS = (1, 2, 3, 4, 5)
_ASSET_STEPS = (6, 7, 8)
_SEQ_STEP = 9
_PF_TYPES = (("Maya Scene", "ma"), ("Nuke Script", "nk"), ("Alembic Cache", "abc"),
             ("Rendered Image", "exr"), ("Movie", "mov"), ("Houdini Scene", "hip"))
_ASSET_NAMES = ("Hérö", "Sword", "Robot_Ü", "Castle", "Tree", "Car", "Dragon", "Lamp", "Café",
                "Spaceship", "Bridge", "Cat", "Helmet", "Fountain", "Kaiju_怪獣")

#: Permission groups (`PermissionRuleSet.code`), ids 1.. in this order: the site's default
#: roles and a custom `Client` (sgcache/mock/permissions.py says what each sees).
_RULE_SETS = ("Admin", "Manager", "Artist", "Vendor", "Client", "API Admin")


def _role_of(hid: int) -> int:
    """A person's rule set id, from their id alone: 1 is the Admin; of each ten people,
    one Manager, two Vendors, one Client, the rest Artists."""
    code = ("Admin" if hid == 1 else "Manager" if hid % 10 == 3 else "Vendor" if hid % 10 in (4, 7)
            else "Client" if hid % 10 == 6 else "Artist")
    return _RULE_SETS.index(code) + 1


#: Average records a shot subtree produces (shot, tasks, versions, publishes,
#: attachments, notes, replies) plus its share of assets, sequences, playlists.
_PER_SHOT = 10.45


def _dt(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _date(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _link(etype: str, eid: int) -> dict[str, Any]:
    return {"type": etype, "id": eid}


def _links(etype: str, ids: Any) -> list[dict[str, Any]]:
    return [{"type": etype, "id": i} for i in ids]


def generate(size: int, seed: int = 1) -> Iterator[tuple[str, Record]]:
    """Yield about `size` (entity_type, record) pairs of a demo site, the same for a seed."""
    yield from _Site(size, seed).run()


class _Site:
    """Generator state: one seeded RNG, per-type id counters and an advancing clock."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = max(int(size), 1)
        self.rng = random.Random(seed)
        self.last_id: dict[str, int] = defaultdict(int)
        self.emitted = 0
        self.t = _START
        # Average clock step such that ~size records span about 80% of 2024–2026.
        self.step = max(2, int((_END - _START) * 0.8 / self.size) * 2)
        schema = build_schema()
        self.values = {(t, f): fs.valid_values for t, e in schema.entities.items()
                       for f, fs in e.fields.items() if fs.valid_values}
        self.n_humans = min(max(self.size // 2000, 8), 400)
        self.n_projects = min(max(2 + self.size // 100_000, 2), 12)

    # -- helpers ---------------------------------------------------------------
    def ids(self, etype: str, n: int) -> list[int]:
        first = self.last_id[etype] + 1
        self.last_id[etype] += n
        return list(range(first, first + n))

    def one(self, etype: str) -> int:
        self.last_id[etype] += 1
        return self.last_id[etype]

    def author(self) -> dict[str, Any]:
        r = self.rng.random()
        if r < 0.15:
            return _link("ApiUser", 1 + int(r * 20) % 3)
        return _link("HumanUser", 1 + int(self.rng.random() * self.n_humans))

    def sys(self, rec: Record, retire: float = 0.0) -> Record:
        """Add created/updated stamps (increasing with yield order) and maybe retire."""
        rng = self.rng
        self.t = t = min(self.t + 1 + int(rng.random() * self.step), _END - 86400)
        r = rng.random()
        updated = t if r < 0.6 else t + int((r - 0.6) * (_END - t) * 0.5)
        rec["created_at"] = _dt(t)
        rec["updated_at"] = _dt(updated)
        author = self.author()
        rec["created_by"] = author
        rec["updated_by"] = dict(author) if r < 0.8 else self.author()
        if retire and rng.random() < retire:
            rec["__retired"] = True
        return rec

    def maybe(self, value: Any, p_null: float = 0.1) -> Any:
        return None if self.rng.random() < p_null else value

    def text(self, p_null: float = 0.15) -> str | None:
        rng = self.rng
        if rng.random() < p_null:
            return None
        if rng.random() < 0.7:
            return rng.choice(_PHRASES)
        return f"{rng.choice(_PHRASES)}. {rng.choice(_PHRASES)}"

    def choice(self, etype: str, field: str, p_null: float = 0.0) -> str | None:
        if p_null and self.rng.random() < p_null:
            return None
        return self.rng.choice(self.values[(etype, field)])

    def color(self, p_null: float = 0.1) -> str | None:
        rng = self.rng
        if rng.random() < p_null:
            return None
        return f"{rng.randrange(256)},{rng.randrange(256)},{rng.randrange(256)}"

    def tags(self) -> list[str]:
        rng = self.rng
        r = rng.random()
        if r < 0.7:
            return []
        return rng.sample(_TAGS, 1 if r < 0.9 else 2)

    def image(self, etype: str, eid: int, p_null: float = 0.5) -> str | None:
        if self.rng.random() < p_null:
            return None
        return f"{SITE_URL}/thumbnail/{etype}/{eid}.png"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def date_after(self, days_min: int, days_max: int) -> str:
        return _date(self.t + 86400 * self.rng.randint(days_min, days_max))

    # -- the site --------------------------------------------------------------
    def run(self) -> Iterator[tuple[str, Record]]:
        # Rule sets first and not counted: every account links to one, and they draw nothing
        # from the random stream, so the rest of the site is what it was before they existed.
        yield from self.rule_sets()
        parts = [self.people(), self.catalog(), self.projects(), self.pages()]
        for part in parts:
            for item in part:
                self.emitted += 1
                yield item
        remaining = self.n_projects
        for pid in range(1, self.n_projects + 1):
            budget = max(self.size - self.emitted, 0) / remaining
            remaining -= 1
            for item in self.project(pid, budget):
                self.emitted += 1
                yield item

    def rule_sets(self) -> Iterator[tuple[str, Record]]:
        """The site's default permission groups plus a custom one (`Client`), created by the
        first admin at the very start (a cycle the site has too: that admin has one)."""
        stamp = _dt(_START)
        for rid in self.ids("PermissionRuleSet", len(_RULE_SETS)):
            yield "PermissionRuleSet", {
                "id": rid, "code": _RULE_SETS[rid - 1], "display_name": _RULE_SETS[rid - 1], "parent_set": None,
                "created_at": stamp, "updated_at": stamp,
                "created_by": _link("HumanUser", 1), "updated_by": _link("HumanUser", 1)}

    def people(self) -> Iterator[tuple[str, Record]]:
        rng = self.rng
        n_groups = min(3 + self.n_humans // 40, len(_GROUPS))
        human_groups: list[list[int]] = [[]]
        group_users: dict[int, list[int]] = defaultdict(list)
        project_users: dict[int, list[int]] = defaultdict(list)
        human_projects: list[list[int]] = [[]]
        for hid in range(1, self.n_humans + 1):
            gs = sorted(rng.sample(range(1, n_groups + 1), rng.choice((0, 1, 1, 2))))
            ps = (list(range(1, self.n_projects + 1)) if hid == 1 else
                  sorted(rng.sample(range(1, self.n_projects + 1),
                                    min(rng.randint(1, 3), self.n_projects))))
            human_groups.append(gs)
            human_projects.append(ps)
            for g in gs:
                group_users[g].append(hid)
            for p in ps:
                project_users[p].append(hid)
        self.project_users = project_users
        self.n_groups = n_groups

        for hid in self.ids("HumanUser", self.n_humans):
            first, last = (("Site", "Admin") if hid == 1 else
                           (rng.choice(_FIRST), rng.choice(_LAST)))
            login = ("admin" if hid == 1 else
                     f"{first[0]}{last}".lower().encode("ascii", "ignore").decode() + str(hid))
            login = login.replace(" ", "").replace("'", "")
            rec = {"id": hid, "name": f"{first} {last}", "firstname": first, "lastname": last,
                   "login": login, "email": self.maybe(f"{login}@studio.example", 0.05),
                   "sg_status_list": "dis" if hid > 1 and rng.random() < 0.1 else "act",
                   "groups": _links("Group", human_groups[hid]),
                   "projects": _links("Project", human_projects[hid]),
                   "permission_rule_set": _link("PermissionRuleSet", _role_of(hid)),
                   "locked_until": _dt(_START + 86400 * rng.randint(200, 900))
                   if rng.random() < 0.05 else None,
                   "home_page": self.choice("HumanUser", "home_page", 0.3),
                   "image": self.image("HumanUser", hid), "tag_list": self.tags()}
            self.sys(rec, 0.02 if hid > 2 else 0.0)
            # The first admin created everyone (itself included) before any script existed.
            rec["created_by"], rec["updated_by"] = _link("HumanUser", 1), _link("HumanUser", 1)
            yield "HumanUser", rec

        scripts = ((DEMO_CREDENTIALS[0], DEMO_CREDENTIALS[1], True, "The demo site's own script"),
                   ("ingest_bot", f"{rng.getrandbits(160):040x}", False,
                    "Bulk ingest: events off, as Autodesk recommends for busy scripts"),
                   ("tk_pipeline", f"{rng.getrandbits(160):040x}", True, "Toolkit pipeline"))
        for aid, (name, key, events, desc) in zip(self.ids("ApiUser", 3), scripts):
            rec = {"id": aid, "firstname": name, "lastname": "1.0", "description": desc,
                   "email": None, "salted_password": key, "generate_events": events,
                   "sg_status_list": "act", "tag_list": [],
                   "permission_rule_set": _link("PermissionRuleSet", _RULE_SETS.index("API Admin") + 1)}
            self.sys(rec)
            rec["created_by"], rec["updated_by"] = _link("HumanUser", 1), _link("HumanUser", 1)
            yield "ApiUser", rec

        for gid in self.ids("Group", n_groups):
            rec = {"id": gid, "code": _GROUPS[gid - 1], "users": _links("HumanUser", group_users[gid]),
                   "tag_list": self.tags()}
            yield "Group", self.sys(rec)

    def catalog(self) -> Iterator[tuple[str, Record]]:
        for tid in self.ids("Tag", len(_TAGS)):
            yield "Tag", self.sys({"id": tid, "name": _TAGS[tid - 1], "description": self.text(0.7)})
        for sid in self.ids("Step", len(_STEPS)):
            code, short, etype = _STEPS[sid - 1]
            rec = {"id": sid, "code": code, "short_name": short, "description": self.text(0.5),
                   "entity_type": etype, "color": self.color(0.0), "list_order": sid}
            yield "Step", self.sys(rec)
        for tid, (code, etype) in zip(self.ids("TaskTemplate", 2),
                                      (("Basic Shot Template", "Shot"),
                                       ("Character Asset Template", "Asset"))):
            yield "TaskTemplate", self.sys({"id": tid, "code": code, "entity_type": etype,
                                            "description": self.text(0.5)})
        for fid in self.ids("PublishedFileType", len(_PF_TYPES)):
            code, ext = _PF_TYPES[fid - 1]
            yield "PublishedFileType", self.sys({"id": fid, "code": code, "short_name": ext,
                                                 "description": self.text(0.5)})
        for lid, (code, linux, mac, win) in zip(
                self.ids("LocalStorage", 2),
                (("primary", "/mnt/projects", "/Volumes/projects", "P:\\"),
                 ("render", "/mnt/render", None, "R:\\"))):
            rec = {"id": lid, "code": code, "description": self.text(0.5), "linux_path": linux,
                   "mac_path": mac, "windows_path": win, "uuid": self.uuid()}
            yield "LocalStorage", self.sys(rec)

    def projects(self) -> Iterator[tuple[str, Record]]:
        rng = self.rng
        for pid in self.ids("Project", self.n_projects):
            i = (pid - 1) % len(_PROJECTS)
            suffix = "" if pid <= len(_PROJECTS) else f" {pid}"
            archived = pid == self.n_projects
            start = self.t + 86400 * rng.randint(0, 60)
            rec = {"id": pid, "name": _PROJECTS[i] + suffix,
                   "tank_name": _PROJECT_SLUGS[i] + suffix.strip(),
                   "archived": archived,
                   "sg_status": "Hold" if archived else self.choice("Project", "sg_status", 0.1),
                   "sg_type": self.choice("Project", "sg_type", 0.2),
                   "sg_description": self.text(0.3), "start_date": _date(start),
                   "end_date": self.maybe(_date(start + 86400 * rng.randint(200, 700)), 0.3),
                   "color": self.color(0.3), "image": self.image("Project", pid, 0.3),
                   "billboard": self.maybe({"content_type": "image/jpeg", "link_type": "web",
                                            "name": "billboard.jpg",
                                            "url": f"{SITE_URL}/billboard/{pid}.jpg"}, 0.5),
                   "users": _links("HumanUser", self.project_users[pid]),
                   "tag_list": self.tags()}
            yield "Project", self.sys(rec)

    def pages(self) -> Iterator[tuple[str, Record]]:
        for pgid, (name, project, etype, ptype) in zip(
                self.ids("Page", 3),
                (("Shots", 1, "Shot", "project_overview"), ("My Tasks", None, "Task", "my_tasks"),
                 ("Media Review", 1, "Version", "media"))):
            rec = {"id": pgid, "name": name,
                   "project": _link("Project", project) if project else None,
                   "entity_type": etype, "page_type": ptype, "description": self.text(0.5),
                   "shared": pgid != 2, "admin": False}
            yield "Page", self.sys(rec)

    # -- one project ----------------------------------------------------------
    def project(self, pid: int, budget: float) -> Iterator[tuple[str, Record]]:
        """Assets, sequences → shot subtrees, then playlists and edits of one project."""
        rng = self.rng
        n_shots = max(1, round((budget - 2) / _PER_SHOT))
        n_assets = max(2, n_shots // 8)
        n_playlists = max(1, n_shots // 15)
        plink = _link("Project", pid)
        self.members = self.project_users[pid] or [1]
        self.tank = _PROJECT_SLUGS[(pid - 1) % len(_PROJECT_SLUGS)]

        # Plan sequences and shot ids, so assets can list the shots they appear in.
        seq_sizes: list[int] = []
        left = n_shots
        while left > 0:
            seq_sizes.append(min(left, rng.randint(8, 40)))
            left -= seq_sizes[-1]
        first_shot = self.last_id["Shot"] + 1
        asset_ids = list(range(self.last_id["Asset"] + 1, self.last_id["Asset"] + 1 + n_assets))
        asset_shots: dict[int, list[int]] = {}
        shot_assets: dict[int, list[int]] = defaultdict(list)
        for aid in asset_ids:
            shots = sorted(rng.sample(range(first_shot, first_shot + n_shots),
                                      min(rng.choice((0, 1, 2, 3, 6)), n_shots)))
            asset_shots[aid] = shots
            for s in shots:
                shot_assets[s].append(aid)

        self.playlist_ids = self.ids("Playlist", n_playlists)
        self.playlist_versions: dict[int, list[int]] = defaultdict(list)

        for aid in self.ids("Asset", n_assets):
            yield from self.asset(aid, plink, asset_shots[aid])

        for n_in_seq in seq_sizes:
            seq_id = self.one("Sequence")
            shot_ids = self.ids("Shot", n_in_seq)  # == the planned range, in order
            task_ids = self.ids("Task", 1) if rng.random() < 0.3 else []
            code = f"SQ{seq_id * 10:04d}"
            rec = {"id": seq_id, "code": code, "project": plink, "description": self.text(0.4),
                   "sg_status_list": self.choice("Sequence", "sg_status_list", 0.05),
                   "shots": _links("Shot", shot_ids), "tasks": _links("Task", task_ids),
                   "notes": [], "image": self.image("Sequence", seq_id, 0.7),
                   "tag_list": self.tags()}
            yield "Sequence", self.sys(rec)
            for tid in task_ids:
                yield "Task", self.task(tid, plink, _link("Sequence", seq_id), _SEQ_STEP,
                                        "Edit", [], [], [])
            for i, sid in enumerate(shot_ids):
                yield from self.shot(sid, plink, seq_id, code, i, shot_assets.get(sid, []))

        for plid in self.playlist_ids:
            rec = {"id": plid, "code": rng.choice(("Dailies", "Client Review", "Supervisor Pass",
                                                   "Revue du jour")) + f" #{plid}",
                   "project": plink, "description": self.text(0.5),
                   "versions": _links("Version", self.playlist_versions[plid]),
                   "sg_date_and_time": self.maybe(_dt(self.t + 3600 * rng.randint(1, 400)), 0.3),
                   "sg_status": self.choice("Playlist", "sg_status"),
                   "locked": rng.random() < 0.2, "notes": [], "tag_list": self.tags()}
            yield "Playlist", self.sys(rec)

        for cid in self.ids("CustomEntity01", 2):
            yield "CustomEntity01", self.custom(cid, plink, first_shot, n_shots)

    def task(self, tid: int, plink: dict, entity: dict, step: int, content: str,
             upstream: list[int], downstream: list[int], notes: list[int]) -> Record:
        rng = self.rng
        members = self.members
        r = rng.random()
        if r < 0.1:
            assignees: list[dict] = []
        elif r < 0.2:
            assignees = [_link("Group", rng.randint(1, self.n_groups))]
        else:
            assignees = _links("HumanUser", sorted(set(rng.choice(members)
                                                       for _ in range(1 + (r > 0.85)))))
        days = rng.randint(1, 20)
        rec = {"id": tid, "content": content, "project": plink, "entity": entity,
               "step": _link("Step", step), "task_assignees": assignees,
               "sg_status_list": self.choice("Task", "sg_status_list", 0.03),
               "start_date": self.maybe(self.date_after(0, 30), 0.15),
               "due_date": self.maybe(self.date_after(31, 90), 0.15),
               "duration": self.maybe(days * 480, 0.1),
               "est_in_mins": self.maybe(days * 480 + rng.randint(-120, 600), 0.3),
               "sg_progress": self.maybe(rng.randint(0, 100), 0.3),
               "color": "pipeline_step" if r > 0.95 else self.color(0.6),
               "milestone": r < 0.03,
               "sg_priority": self.choice("Task", "sg_priority", 0.5),
               "upstream_tasks": _links("Task", upstream),
               "downstream_tasks": _links("Task", downstream),
               "notes": _links("Note", notes), "task_template": None,
               "image": None, "tag_list": self.tags()}
        return self.sys(rec, 0.02)

    def asset(self, aid: int, plink: dict, shots: list[int]) -> Iterator[tuple[str, Record]]:
        rng = self.rng
        steps = _ASSET_STEPS[:rng.randint(2, 3)]
        task_ids = self.ids("Task", len(steps))
        note_ids = self.ids("Note", rng.choice((0, 1)))
        name = rng.choice(_ASSET_NAMES)
        rec = {"id": aid, "code": f"{name}{'' if rng.random() < 0.5 else '_' + str(aid)}",
               "project": plink,
               "sg_asset_type": self.choice("Asset", "sg_asset_type", 0.1),
               "sg_status_list": self.choice("Asset", "sg_status_list", 0.05),
               "description": self.text(), "shots": _links("Shot", shots),
               "tasks": _links("Task", task_ids), "notes": _links("Note", note_ids),
               "task_template": _link("TaskTemplate", 2) if rng.random() < 0.3 else None,
               "image": self.image("Asset", aid), "tag_list": self.tags()}
        yield "Asset", self.sys(rec, 0.02)
        alink = _link("Asset", aid)
        for i, (tid, step) in enumerate(zip(task_ids, steps)):
            yield "Task", self.task(tid, plink, alink, step, _STEPS[step - 1][0],
                                    task_ids[i - 1:i], task_ids[i + 1:i + 2], [])
        for nid in note_ids:
            yield from self.note(nid, plink, [alink], [])

    def note(self, nid: int, plink: dict, links: list[dict], tasks: list[int]
             ) -> Iterator[tuple[str, Record]]:
        rng = self.rng
        reply_ids = self.ids("Reply", rng.choice((0, 0, 1, 2)))
        to = _links("HumanUser", sorted(set(rng.choice(self.members)
                                            for _ in range(rng.randint(1, 2)))))
        cc = [_link("Group", rng.randint(1, self.n_groups))] if rng.random() < 0.3 else []
        rec = {"id": nid, "subject": self.text(0.05), "content": self.text(0.1),
               "project": plink, "note_links": links, "tasks": _links("Task", tasks),
               "addressings_to": to, "addressings_cc": cc,
               "user": _link("HumanUser", rng.choice(self.members)),
               "replies": _links("Reply", reply_ids), "attachments": [],
               "sg_note_type": self.choice("Note", "sg_note_type", 0.2),
               "sg_status_list": self.choice("Note", "sg_status_list"),
               "tag_list": self.tags()}
        yield "Note", self.sys(rec, 0.02)
        for rid in reply_ids:
            rec = {"id": rid, "content": self.text(0.0), "entity": _link("Note", nid),
                   "user": _link("HumanUser", rng.choice(self.members))}
            yield "Reply", self.sys(rec, 0.02)

    def shot(self, sid: int, plink: dict, seq_id: int, seq_code: str, index: int,
             assets: list[int]) -> Iterator[tuple[str, Record]]:
        """One shot and everything under it, ids planned first so both sides of links agree."""
        rng = self.rng
        # -- plan
        n_steps = rng.randint(3, 5)
        steps = sorted(rng.sample(_SHOT_STEPS, n_steps))
        task_ids = self.ids("Task", n_steps)
        n_versions = rng.choice((0, 1, 1, 2, 2, 3))
        version_ids = self.ids("Version", n_versions)
        version_task = [rng.randrange(n_steps) for _ in version_ids]
        pf_ids = [self.ids("PublishedFile", rng.randint(0, 2)) for _ in version_ids]
        uploads = [self.one("Attachment") if rng.random() < 0.25 else None for _ in version_ids]
        note_ids = self.ids("Note", rng.choice((0, 0, 1, 1, 2)))
        note_version = [rng.randrange(n_versions) if n_versions and rng.random() < 0.5 else None
                        for _ in note_ids]
        note_task = [rng.randrange(n_steps) if rng.random() < 0.4 else None for _ in note_ids]
        task_notes: dict[int, list[int]] = defaultdict(list)
        version_notes: dict[int, list[int]] = defaultdict(list)
        for nid, vi, ti in zip(note_ids, note_version, note_task):
            if vi is not None:
                version_notes[vi].append(nid)
            if ti is not None:
                task_notes[ti].append(nid)

        # -- shot
        code = f"{seq_code}_{(index + 1) * 10:04d}"
        slink = _link("Shot", sid)
        cut_in = 1001
        duration = rng.randint(24, 240)
        cut = rng.random() > 0.1
        rec = {"id": sid, "code": code, "project": plink, "sg_sequence": _link("Sequence", seq_id),
               "sg_status_list": self.choice("Shot", "sg_status_list", 0.03),
               "description": self.text(),
               "sg_cut_in": cut_in if cut else None,
               "sg_cut_out": cut_in + duration - 1 if cut else None,
               "sg_cut_duration": duration if cut else None,
               "sg_cut_order": index + 1, "sg_head_in": self.maybe(cut_in - 8, 0.3),
               "sg_tail_out": self.maybe(cut_in + duration + 7, 0.3),
               "sg_frame_rate": self.maybe(rng.choice((24.0, 25.0, 23.976, 30.0)), 0.15),
               "sg_shot_type": self.choice("Shot", "sg_shot_type", 0.4),
               "tasks": _links("Task", task_ids), "assets": _links("Asset", assets),
               "notes": _links("Note", note_ids),
               "task_template": _link("TaskTemplate", 1) if rng.random() < 0.5 else None,
               "image": self.image("Shot", sid, 0.3),
               "filmstrip_image": self.image("Shot", sid, 0.8), "tag_list": self.tags()}
        yield "Shot", self.sys(rec, 0.02)

        # -- tasks: a chain of dependencies in step order
        for i, (tid, step) in enumerate(zip(task_ids, steps)):
            yield "Task", self.task(tid, plink, slink, step, _STEPS[step - 1][0],
                                    task_ids[i - 1:i] if i else [], task_ids[i + 1:i + 2],
                                    task_notes.get(i, []))

        # -- versions, their uploads and publishes
        path = f"/mnt/projects/{self.tank}/{seq_code}/{code}"
        for vi, vid in enumerate(version_ids):
            ti = version_task[vi]
            short = _STEPS[steps[ti] - 1][1]
            vcode = f"{code}_{short.lower()}_v{vi + 1:03d}"
            playlists = (sorted(rng.sample(self.playlist_ids, 1))
                         if rng.random() < 0.2 else [])
            for pl in playlists:
                self.playlist_versions[pl].append(vid)
            first = 1001
            frames = duration + rng.choice((0, 0, 8, 16))
            att = uploads[vi]
            movie = None if att is None else {
                "content_type": "video/quicktime", "link_type": "upload",
                "name": f"{vcode}.mov", "url": f"{SITE_URL}/file_serve/attachment/{att}",
                "type": "Attachment", "id": att}
            rec = {"id": vid, "code": vcode, "project": plink, "entity": slink,
                   "sg_task": _link("Task", task_ids[ti]),
                   "user": _link("HumanUser", rng.choice(self.members)),
                   "sg_status_list": self.choice("Version", "sg_status_list", 0.05),
                   "description": self.text(0.3), "sg_uploaded_movie": movie,
                   "sg_path_to_frames": self.maybe(f"{path}/{vcode}/{vcode}.####.exr", 0.1),
                   "sg_path_to_movie": self.maybe(f"{path}/{vcode}.mov", 0.3),
                   "frame_count": self.maybe(frames, 0.1), "sg_first_frame": first,
                   "sg_last_frame": first + frames - 1,
                   "frame_range": self.maybe(f"{first}-{first + frames - 1}", 0.2),
                   "sg_uploaded_movie_frame_rate": 24.0 if movie else None,
                   "flagged": rng.random() < 0.05,
                   "playlists": _links("Playlist", playlists),
                   "published_files": _links("PublishedFile", pf_ids[vi]),
                   "notes": _links("Note", version_notes.get(vi, [])),
                   "image": self.image("Version", vid, 0.2),
                   "filmstrip_image": self.image("Version", vid, 0.6), "tag_list": self.tags()}
            yield "Version", self.sys(rec, 0.02)
            vlink = _link("Version", vid)
            if att is not None:
                arec = {"id": att, "filename": f"{vcode}.mov", "display_name": f"{vcode}.mov",
                        "project": plink, "this_file": dict(movie), "attachment_links": [vlink],
                        "description": None, "file_size": rng.randint(10**6, 2 * 10**9),
                        "file_extension": "mov", "sg_status_list": "na", "tag_list": []}
                yield "Attachment", self.sys(arec, 0.02)
            for n, pfid in enumerate(pf_ids[vi]):
                ftype = rng.randrange(len(_PF_TYPES))
                fname = f"{vcode}.{_PF_TYPES[ftype][1]}"
                rel = f"{self.tank}/{seq_code}/{code}/publish/{fname}"
                local = {"content_type": None, "link_type": "local", "name": fname,
                         "local_path": f"/mnt/projects/{rel}",
                         "local_path_linux": f"/mnt/projects/{rel}",
                         "local_path_mac": f"/Volumes/projects/{rel}",
                         "local_path_windows": "P:\\" + rel.replace("/", "\\"),
                         "local_storage": {"type": "LocalStorage", "id": 1, "name": "primary"},
                         "relative_path": rel, "url": f"file:///mnt/projects/{rel}"}
                prec = {"id": pfid, "code": fname, "name": fname.split(".")[0], "project": plink,
                        "entity": slink, "task": _link("Task", task_ids[ti]), "version": vlink,
                        "path": self.maybe(local, 0.05), "path_cache": rel,
                        "path_cache_storage": _link("LocalStorage", 1),
                        "published_file_type": _link("PublishedFileType", ftype + 1),
                        "version_number": vi + 1,
                        "sg_status_list": self.choice("PublishedFile", "sg_status_list"),
                        "description": self.text(0.5), "notes": [], "image": None,
                        "tag_list": []}
                yield "PublishedFile", self.sys(prec, 0.02)

        # -- notes on the shot (and maybe one version / task), with replies
        for nid, vi, ti in zip(note_ids, note_version, note_task):
            links = [slink] + ([_link("Version", version_ids[vi])] if vi is not None else [])
            yield from self.note(nid, plink, links, [task_ids[ti]] if ti is not None else [])

    def custom(self, cid: int, plink: dict, first_shot: int, n_shots: int) -> Record:
        """An 'Edit': one field of every data type the usual entities do not carry."""
        rng = self.rng
        null = cid % 2 == 0  # every other one is mostly empty: nulls of every type
        rec = {"id": cid, "code": f"Edit v{cid:02d} — Montage ü", "project": plink,
               "description": None if null else self.text(0.0),
               "sg_status_list": None if null else self.choice("CustomEntity01", "sg_status_list"),
               "sg_budget": None if null else round(rng.uniform(1000, 250000), 2),
               "sg_start_timecode": None if null else rng.randint(0, 86_400_000),
               "sg_length": None if null else f"{rng.randint(0, 999)}-{rng.randint(0, 15):02d}",
               "sg_uuid": None if null else self.uuid(),
               "sg_settings": None if null else {"fps": 24, "handles": [8, 8], "name": "Größe",
                                                 "nested": {"ok": True}},
               "sg_review_duration": None if null else rng.randint(0, 600),
               "sg_completion": None if null else rng.randint(0, 100),
               "sg_aspect_ratio": None if null else rng.choice((1.85, 2.39, 1.777)),
               "sg_approved": not null,
               "sg_cut": None if null else {"content_type": "text/plain", "link_type": "web",
                                            "name": "cut.edl", "url": f"{SITE_URL}/edl/{cid}"},
               "sg_shot": None if null else _link("Shot", rng.randrange(first_shot,
                                                                        first_shot + n_shots)),
               "sg_source_type": None if null else "Shot",
               "sg_color": None if null else self.color(0.0),
               "sg_deliver_at": None if null else _dt(self.t + 86400 * 30),
               "sg_deliver_on": None if null else self.date_after(10, 60),
               "image": None, "tag_list": [] if null else ["retime"]}
        return self.sys(rec)
