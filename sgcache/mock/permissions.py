"""The mock site's permission roles: who sees which rows, types and fields.

A caller's role is their `permission_rule_set`'s `code`. The roles follow Autodesk's
support article "Permissions" (support.shotgunsoftware.com/hc/en-us/articles/219030638):
Admin (and the scripts' API Admin) see everything; Manager shares most of Admin with some
entities restricted (here: scripts, ApiUser); Artist sees only the Projects whose `users`
hold them, and those projects' rows; Vendor sees assigned Projects and, in them, only the
Tasks assigned to them or a Group they are in, Shots and Assets with such a Task, Notes
addressed to them or their Groups (To or Cc) or created by them, and Versions they
created. `Client` is a custom role: Artist's rows, minus every Note and HumanUser.email.

Where the article is silent the mock chooses, and the cache passes such reads through:
rows of non-project types are seen by every role; rows of project types without a
project by full roles only; links to rows the caller may not see read as null (single)
or are left out (multi); hidden fields are left out of answers.

This is the mock's own code (set arithmetic over its records), shared with nothing in the
cache: the cache expresses the same rules as api3 filters, and the differential tests
compare the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .auth import Actor
from .store import Store

#: Rule sets the mock creates when an account needs one (code, display name).
DEFAULT_RULE_SETS = ("Admin", "Manager", "Artist", "Vendor", "Client", "API Admin")


@dataclass(frozen=True)
class Role:
    rows: str  # "all" | "projects" | "vendor"
    hidden_types: frozenset[str] = frozenset()
    hidden_fields: frozenset[str] = frozenset()  # "Type.field"


ROLES: dict[str, Role] = {
    "Admin": Role("all"),
    "API Admin": Role("all"),
    "Manager": Role("all", frozenset({"ApiUser"})),
    "Artist": Role("projects"),
    "Vendor": Role("vendor"),
    "Client": Role("projects", frozenset({"Note"}), frozenset({"HumanUser.email"})),
}
#: Accounts without a rule set (or of a role the mock does not model) see everything.
EVERYTHING = Role("all")


def ensure_rule_set(store: Store, code: str) -> dict[str, Any] | None:
    """The active PermissionRuleSet with this code, created if the schema has the type."""
    if "PermissionRuleSet" not in store.schema:
        return None
    for i, rec in store.tables.get("PermissionRuleSet", {}).items():
        if rec.get("code") == code and not store.is_retired("PermissionRuleSet", i):
            return {"type": "PermissionRuleSet", "id": i}
    eid = store.allocate_id("PermissionRuleSet")
    rec: dict[str, Any] = {"id": eid, "code": code}
    if store.schema.get_field("PermissionRuleSet", "display_name"):
        rec["display_name"] = code
    store.insert("PermissionRuleSet", rec)
    return {"type": "PermissionRuleSet", "id": eid}


def _ids(links: Any) -> set[tuple[str, int]]:
    if isinstance(links, dict):
        links = [links]
    if not isinstance(links, list):
        return set()
    return {(x.get("type"), x.get("id")) for x in links if isinstance(x, dict)}


class View:
    """What one caller may see, worked out lazily per type for one request."""

    def __init__(self, store: Store, actor: Actor) -> None:
        self.store = store
        self.user = actor.user
        self.role = self._role()
        self._visible: dict[str, set[int] | None] = {}
        self._projects: set[int] | None = None
        self._mine: set[tuple[str, int]] | None = None

    def _role(self) -> Role:
        if not self.user:
            return EVERYTHING
        rec = self.store.get_active(self.user["type"], self.user["id"]) or {}
        link = rec.get("permission_rule_set")
        rs = self.store.get_active("PermissionRuleSet", link.get("id")) if isinstance(link, dict) else None
        return ROLES.get((rs or {}).get("code"), EVERYTHING)

    @property
    def restricted(self) -> bool:
        r = self.role
        return r.rows != "all" or bool(r.hidden_types) or bool(r.hidden_fields)

    # -- the caller's assignments -----------------------------------------------------------
    def me(self) -> tuple[str, int]:
        assert self.user is not None
        return (self.user["type"], self.user["id"])

    def projects(self) -> set[int]:
        if self._projects is None:
            me = self.me()
            self._projects = {pid for pid, rec in self.store.tables.get("Project", {}).items()
                              if not self.store.is_retired("Project", pid) and me in _ids(rec.get("users"))}
        return self._projects

    def mine(self) -> set[tuple[str, int]]:
        """The caller and every active Group whose users hold them."""
        if self._mine is None:
            me = self.me()
            self._mine = {me} | {("Group", gid) for gid, rec in self.store.tables.get("Group", {}).items()
                                 if not self.store.is_retired("Group", gid) and me in _ids(rec.get("users"))}
        return self._mine

    # -- rows ---------------------------------------------------------------------------------
    def visible(self, etype: str) -> set[int] | None:
        """Ids of `etype` the caller may see (active or retired), None for all of them."""
        if etype not in self._visible:
            self._visible[etype] = self._compute(etype)
        return self._visible[etype]

    def _compute(self, etype: str) -> set[int] | None:
        role, store = self.role, self.store
        table = store.tables.get(etype, {})
        if etype in role.hidden_types:
            return set()
        if role.rows == "all":
            return None
        if etype == "Project":
            return set(self.projects())
        pf = store.schema.get_field(etype, "project")
        if pf is None or pf.data_type != "entity":
            return None  # not a project type: seen by every role here
        mine, me = self.mine(), self.me()

        def in_project(rec: dict[str, Any]) -> bool:
            p = rec.get("project")
            return isinstance(p, dict) and p.get("type") == "Project" and p.get("id") in self.projects()

        rule: Callable[[int, dict[str, Any]], bool] = lambda i, rec: True
        if role.rows == "vendor":
            if etype == "Task":
                rule = lambda i, rec: bool(_ids(rec.get("task_assignees")) & mine)
            elif etype in ("Shot", "Asset"):
                with_tasks = self._entities_with_my_tasks(mine)
                rule = lambda i, rec: (etype, i) in with_tasks
            elif etype == "Note":
                rule = lambda i, rec: bool((_ids(rec.get("addressings_to")) | _ids(rec.get("addressings_cc")))
                                           & mine) or me in _ids(rec.get("created_by"))
            elif etype == "Version":
                rule = lambda i, rec: me in _ids(rec.get("created_by"))
        return {i for i, rec in table.items() if in_project(rec) and rule(i, rec)}

    def _entities_with_my_tasks(self, mine: set[tuple[str, int]]) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for tid, rec in self.store.tables.get("Task", {}).items():
            if self.store.is_retired("Task", tid) or not (_ids(rec.get("task_assignees")) & mine):
                continue
            ent = rec.get("entity")
            if isinstance(ent, dict):
                out.add((ent.get("type"), ent.get("id")))
        return out

    def may_see(self, etype: Any, eid: Any) -> bool:
        if not isinstance(etype, str):
            return True
        vis = self.visible(etype)
        return vis is None or eid in vis

    # -- requests -------------------------------------------------------------------------------
    def narrow(self, params: Any) -> Any:
        """The params with the caller's visible ids AND-ed onto their filters."""
        if not isinstance(params, dict) or not isinstance(params.get("type"), str) \
                or params["type"] not in self.store.schema:
            return params
        vis = self.visible(params["type"])
        if vis is None:
            return params
        only = ({"path": "id", "relation": "in", "values": sorted(vis)} if vis
                else {"path": "id", "relation": "is", "values": [0]})
        filters = params.get("filters")
        conds = (list(filters) if isinstance(filters, list) else
                 [] if filters in (None, {}) else [filters])
        return {**params, "filters": {"logical_operator": "and", "conditions": [*conds, only]}}

    def scrub(self, etype: str, result: Any) -> Any:
        """Leave out of a read's answer what the caller may not see: hidden fields, links to
        rows they may not see (single links read as null)."""
        if not isinstance(result, dict) or not isinstance(result.get("entities"), list):
            return result
        hidden = self.role.hidden_fields
        for ent in result["entities"]:
            for key in list(ent):
                if key in ("type", "id"):
                    continue
                if self._hidden_path(etype, key, hidden):
                    del ent[key]
                    continue
                v = ent[key]
                if isinstance(v, dict) and "type" in v and "id" in v:
                    if not self.may_see(v["type"], v["id"]):
                        ent[key] = None
                elif isinstance(v, list):
                    ent[key] = [x for x in v if not (isinstance(x, dict) and "type" in x and "id" in x)
                                or self.may_see(x["type"], x["id"])]
        return result

    def _hidden_path(self, etype: str, path: str, hidden: frozenset[str]) -> bool:
        parts = path.split(".")
        cur = etype
        for i in range(0, len(parts), 2):
            if f"{cur}.{parts[i]}" in hidden or cur in self.role.hidden_types:
                return True
            if i + 1 < len(parts):
                cur = parts[i + 1]
        return False


def read(store: Store, actor: Actor, params: Any, run: Callable[[Any], Any]) -> Any:
    """A read as this caller sees it: `run` answers the narrowed params."""
    view = View(store, actor)
    if not view.restricted:
        return run(params)
    return view.scrub(params.get("type") if isinstance(params, dict) else "", run(view.narrow(params)))


def summarize(store: Store, actor: Actor, params: Any, run: Callable[[Any], Any]) -> Any:
    """Summaries over the rows this caller may see."""
    view = View(store, actor)
    if not view.restricted:
        return run(params)
    return run(view.narrow(params))
