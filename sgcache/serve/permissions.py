"""Every caller sees exactly what the site would show them, or the site answers.

The site does not publish its permission rules through the API, so the cache is told,
per permission group (a `PermissionRuleSet.code`), which of a few policies the site
applies (config `SGCACHE_PERMISSIONS`), and applies it to every local answer:

- `full`: everything cached (the site's Admin and API Admin roles);
- `assigned_projects`: only Projects whose `users` hold the caller and rows of those
  projects (the Artist role);
- `vendor`: the Vendor role: assigned Projects and, in them, Tasks assigned to the caller
  (or a Group they are in), Shots and Assets with such a Task, Notes addressed to them
  (To or Cc, directly or through a Group) or created by them, Versions they created;
- `passthrough`: never answered locally.

Source for the default roles: Autodesk's support article "Permissions"
(support.shotgunsoftware.com/hc/en-us/articles/219030638-Permissions). A restricted read
is answered by AND-ing ordinary api3 filter conditions onto its filters, so the read
engine answers it as any other read. Whatever that article leaves open goes to the site:
types without a rule, deep paths, rows of project types without a project, links in the
result to anything the caller may not see, hidden types and fields touched anywhere, and
callers the cache cannot name (session tokens) or place in a named group.

The policy itself (its shape, defaults, parsing) is `permission_policy.py`. Why this module
is still ~700 lines: finding the caller, the visibility conditions per policy, the check
of every link in an answer and the point-read fast path (its verdicts kept per policy and
shape) share the Caller/Grant types and one cache of callers and verdicts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..read.engine import MAX_PAGE
from ..read.filters import FieldPath, Group, parse_filters, resolve_path
from ..read.names import name_field
from ..read.passthrough import Passthrough
from ..read.summarize import Summarizer
from ..store.field_types import fold
from ..store.replicas import Route
from ..store.tables import ACTIVE, Store
from .permission_policy import ANY_GROUP, RESTRICTED, SOURCE, GroupPolicy, Policy

#: Types the caller's group is read from: all must be cached and primed.
CALLER_TYPES = ("HumanUser", "ApiUser", "PermissionRuleSet")
#: What restricted policies read: projects' users, groups' users.
RESTRICTED_TYPES = ("Project", "Group")


def _reason(text: str) -> Passthrough:
    return Passthrough(f"permission: {text}")


#: The keys of a point read whose verdict `_point_plan` keeps (others: decided every time).
#: shotgun_api3's `find` sends the paging-info flags; they change no check (`_point` turns
#: away `return_paging_info`, the counts).
_POINT_KEYS = frozenset({"type", "filters", "return_fields", "paging", "return_only", "include_archived_projects",
                         "api_return_image_urls", "return_paging_info", "return_paging_info_without_counts"})

#: A condition no row meets (ids start at 1).
_NOTHING = {"path": "id", "relation": "is", "values": [0]}


# -- who is calling ---------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """The effective user, their permission group and the Groups they are in."""

    user_type: str
    user_id: int
    group: str | None
    group_ids: tuple[int, ...] = ()
    project_ids: frozenset[int] = frozenset()  # live Projects whose users hold them

    @property
    def me(self) -> dict[str, Any]:
        return {"type": self.user_type, "id": self.user_id}

    @property
    def mine(self) -> list[dict[str, Any]]:
        """The caller and their Groups, as assignees and addressees are stored."""
        return [self.me, *({"type": "Group", "id": g} for g in self.group_ids)]


@dataclass(frozen=True)
class Grant:
    """What applies to one request: the caller (None when unknown) and their policy."""

    caller: Caller | None
    rules: GroupPolicy
    #: The policy's name for the caller's group (`*`: a group it does not name, or no known
    #: caller); None when nobody is looked up. Shadow mismatches quarantine by it.
    group: str | None = None

    @property
    def full(self) -> bool:
        return self.rules.full


def effective_user(auth: Any) -> tuple[str, str] | None:
    """("HumanUser", login) or ("ApiUser", script name) the site would act as, or None
    when the credentials name nobody the cache can look up (a session token)."""
    if not isinstance(auth, Mapping):
        return None
    sudo = auth.get("sudo_as_login")
    if isinstance(sudo, str) and sudo:
        return ("HumanUser", sudo)
    if sudo is not None:
        return None
    if isinstance(auth.get("user_login"), str) and auth.get("user_login"):
        return ("HumanUser", auth["user_login"])
    if "user_login" in auth:
        return None
    if isinstance(auth.get("script_name"), str) and auth.get("script_name"):
        return ("ApiUser", auth["script_name"])
    return None


class Permissions:
    """Resolves callers (cached `ttl` seconds per identity) and restricts their reads."""

    def __init__(self, policy: Policy, store: Callable[[], Store], *,
                 unprimed: Callable[[], frozenset[str]] | None = None, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._store = store
        self._unprimed = unprimed or (lambda: frozenset())
        self.ttl = ttl
        self._clock = clock
        self._grants: dict[tuple[str, str], tuple[float, Grant]] = {}
        self._lock = threading.Lock()
        #: Groups shadow verification quarantined (group -> its GroupQuarantine), kept
        #: current by the shadow verifier (serve/shadow.py, serve/group_quarantine.py).
        self.quarantined: Mapping[str, Any] = {}
        #: (policy, point read's shape) -> `_point_plan`'s verdict, for the schema it was made with
        self._point_plans: dict[Any, Any] = {}
        self._point_schema: Any = None

    # -- the caller ----------------------------------------------------------------------
    def cached(self, auth: Any) -> Grant | None:
        """The grant for these credentials if known and fresh (no database access)."""
        if not self.policy.needs_caller:
            return Grant(None, self.policy.for_group(None))
        who = effective_user(auth)
        if who is None:
            return Grant(None, self.policy.for_group(None), ANY_GROUP)
        hit = self._grants.get(who)
        if hit is not None and self._clock() - hit[0] < self.ttl:
            return hit[1]
        return None

    def grant(self, auth: Any) -> Grant:
        """Who the caller is and what they see, read from the cache (blocking)."""
        cached = self.cached(auth)
        if cached is not None:
            return cached
        who = effective_user(auth)
        assert who is not None
        store = self._store()
        with store.engine.connect() as conn:
            caller = self._resolve(store, conn, *who)
        code = caller.group if caller else None
        g = Grant(caller, self.policy.for_group(code), code if code is not None and code in self.policy.groups
                  else ANY_GROUP)
        with self._lock:
            if len(self._grants) > 10_000:
                self._grants.clear()
            self._grants[who] = (self._clock(), g)
        return g

    def _resolve(self, store: Store, conn: Connection, utype: str, name: str) -> Caller | None:
        missing = [t for t in CALLER_TYPES if t not in store] + sorted(set(CALLER_TYPES) & self._unprimed())
        if missing:
            return None
        u = store[utype]
        key = "login" if utype == "HumanUser" else "firstname"
        if key not in u.fields or "permission_rule_set" not in u.fields:
            return None
        t = u.table
        if utype == "HumanUser":  # the site matches logins case-insensitively
            match = t.c[key + "__ci"] == fold(name) if key + "__ci" in t.c else t.c[key] == name
        else:
            match = t.c[key] == name
        rows = conn.execute(select(t.c.id, t.c.permission_rule_set__type, t.c.permission_rule_set__id)
                            .where(match, t.c[ACTIVE]).limit(2)).all()
        if len(rows) != 1:
            return None
        uid, rtype, rid = rows[0]
        code = None
        rs = store["PermissionRuleSet"]
        if rtype == "PermissionRuleSet" and rid is not None and "code" in rs.fields:
            code = conn.execute(select(rs.table.c.code).where(rs.table.c.id == rid, rs.table.c[ACTIVE])
                                ).scalar_one_or_none()
        groups = self._holding(store, conn, "Group", int(uid)) if utype == "HumanUser" else frozenset()
        projects = self._holding(store, conn, "Project", int(uid)) if utype == "HumanUser" else frozenset()
        return Caller(utype, int(uid), code if isinstance(code, str) else None, tuple(sorted(groups)), projects)

    def _holding(self, store: Store, conn: Connection, etype: str, uid: int) -> frozenset[int]:
        """Ids of the live `etype` rows whose `users` hold this HumanUser."""
        if etype not in store or "users" not in store[etype].assoc:
            return frozenset()
        et = store[etype]
        a = et.assoc["users"]
        return frozenset(conn.execute(
            select(a.c.parent_id).select_from(a.join(et.table, a.c.parent_id == et.table.c.id)).where(
                a.c.child_type == "HumanUser", a.c.child_id == uid, et.table.c[ACTIVE])).scalars())

    # -- a request ---------------------------------------------------------------------------
    def restrict(self, grant: Grant, method: str, params: dict[str, Any]) -> Restricted:
        """Check the request against the grant; the params the engine should answer instead."""
        rules = grant.rules
        if rules.policy == "passthrough":
            who = grant.caller.group if grant.caller and grant.caller.group else "no known group"
            raise _reason(f"caller's group ({who}) is passed through")
        store = self._store()
        schema = store.schema
        etype = params.get("type")
        if not isinstance(etype, str) or etype not in schema:
            raise _reason("unknown type")
        restricted = rules.policy in RESTRICTED
        if restricted:
            if grant.caller is None or grant.caller.user_type != "HumanUser":
                raise _reason("restricted policies apply to known HumanUsers only")
            unprimed = self._unprimed()
            for t in RESTRICTED_TYPES:
                if t not in store or t in unprimed:
                    raise _reason(f"{t} is not cached: assignments unknown")
        try:
            paths, n_filter = self._paths(schema, etype, method, params)
        except errors.Fault as e:
            raise Passthrough(f"invalid request, site decides: {e.message}") from None
        self._check_hidden(rules, etype, paths, params.get("filters"))
        if not restricted:
            return Restricted(params, None, rules, grant.caller)
        if any(p.is_deep for p in paths):
            raise _reason("deep path for a restricted caller")
        if method == "summarize":
            for p in paths[n_filter:]:
                if p.field.data_type in ("entity", "multi_entity", "addressing"):
                    raise _reason("summary or grouping over links for a restricted caller")
        vis = self.visibility(grant, etype)
        if vis is None:
            return Restricted(params, None, rules, grant.caller)
        out = dict(params)
        filters = params.get("filters")
        conds: list[Any] = []
        if filters not in (None, [], {}):
            conds.append(filters if isinstance(filters, dict) else {"logical_operator": "and", "conditions": filters})
        out["filters"] = {"logical_operator": "and", "conditions": [*conds, *vis]}
        null_check = None
        if self._project_scoped(schema, etype):
            null_check = {"logical_operator": "and", "conditions": [
                *conds, {"path": "project", "relation": "is", "values": [None]}]}
        return Restricted(out, null_check, rules, grant.caller)

    @staticmethod
    def _paths(schema: Any, etype: str, method: str, params: dict[str, Any]) -> tuple[list[FieldPath], int]:
        """Every path the request names, filters' first, and how many of them are filters'."""
        group = parse_filters(schema, etype, params.get("filters"), method)
        paths = list(_filter_paths(group))
        n_filter = len(paths)
        names: list[Any] = []
        if method == "summarize":
            names += [s.get("field") for s in params.get("summaries") or [] if isinstance(s, dict)]
            names += [g.get("field") for g in params.get("grouping") or [] if isinstance(g, dict)]
        else:
            names += [f for f in params.get("return_fields") or [] if f not in ("type", "id")]
            names += [s.get("field_name", s.get("column")) for s in params.get("sorts") or []
                      if isinstance(s, dict)]
        for n in names:
            paths.append(resolve_path(schema, etype, n, method))
        return paths, n_filter

    @staticmethod
    def _check_hidden(rules: GroupPolicy, etype: str, paths: list[FieldPath], filters: Any) -> None:
        if not rules.hidden_types and not rules.hidden_fields:
            return
        if etype in rules.hidden_types:
            raise _reason(f"{etype} is hidden from the caller's group")
        for p in paths:
            cur = p.root_type
            for hop in p.hops:
                if f"{cur}.{hop.field.name}" in rules.hidden_fields or hop.to_type in rules.hidden_types:
                    raise _reason(f"path {p.text} touches what the caller's group may not see")
                cur = hop.to_type
            if f"{cur}.{p.field.name}" in rules.hidden_fields:
                raise _reason(f"field {cur}.{p.field.name} is hidden from the caller's group")
            if set(p.field.valid_types or ()) & rules.hidden_types:
                raise _reason(f"field {p.text} may link to a hidden type")
        for v in _filter_links(filters):
            if v.get("type") in rules.hidden_types:
                raise _reason("filter value of a hidden type")

    @staticmethod
    def _project_scoped(schema: Any, etype: str) -> bool:
        fs = schema.get_field(etype, "project")
        return fs is not None and fs.data_type == "entity" and tuple(fs.valid_types) == ("Project",)

    def visibility(self, grant: Grant, etype: str) -> list[dict[str, Any]] | None:
        """The api3 conditions selecting the rows of `etype` the caller may see (None: all);
        Passthrough where the policy has no documented rule for the type."""
        rules = grant.rules
        if etype in rules.hidden_types:
            raise _reason(f"{etype} is hidden from the caller's group")
        if rules.policy == "full" or etype in rules.open_types:
            return None
        caller = grant.caller
        assert caller is not None
        schema = self._store().schema
        me, mine = caller.me, caller.mine
        # The Projects whose users hold the caller, as read when the grant was made: the
        # same as `project.Project.users is me`, but an indexed condition.
        projects = sorted(caller.project_ids)
        if etype == "Project":
            if schema.get_field("Project", "users") is None:
                raise _reason("Project.users is not in the schema")
            return [{"path": "id", "relation": "in", "values": projects} if projects else _NOTHING]
        if not self._project_scoped(schema, etype):
            raise _reason(f"no documented rule for {etype} under {rules.policy}")
        if not projects:
            return [_NOTHING]
        in_project = {"path": "project", "relation": "in", "values": [{"type": "Project", "id": p} for p in projects]}
        if rules.policy == "assigned_projects":
            return [in_project]
        # vendor: the article lists exactly these types
        if etype == "Task":
            return [in_project, {"path": "task_assignees", "relation": "in", "values": mine}]
        if etype in ("Shot", "Asset"):
            fs = schema.get_field(etype, "tasks")
            if fs is None or "Task" not in fs.valid_types:
                raise _reason(f"{etype}.tasks is not in the schema")
            return [in_project, {"path": "tasks.Task.task_assignees", "relation": "in", "values": mine}]
        if etype == "Note":
            return [in_project, {"logical_operator": "or", "conditions": [
                {"path": "addressings_to", "relation": "in", "values": mine},
                {"path": "addressings_cc", "relation": "in", "values": mine},
                {"path": "created_by", "relation": "is", "values": [me]}]}]
        if etype == "Version":
            return [in_project, {"path": "created_by", "relation": "is", "values": [me]}]
        raise _reason(f"no documented rule for {etype} under vendor")

    # -- after answering ----------------------------------------------------------------------
    def check_links(self, grant: Grant, etype: str, entities: list[dict[str, Any]],
                    visible_ids: Callable[[str, list[Any], list[int]], set[int]],
                    joined: Mapping[str, list[str]] | None = None) -> None:
        """Passthrough unless every link in the answer points at an entity the caller may
        see, and its name at a field they may see. `visible_ids(type, conditions, ids)`
        runs a read of those ids under those conditions. `joined`: see `_links_by_type`."""
        rules = grant.rules
        if rules.full:
            return
        schema = self._store().schema
        by_type = _links_by_type(schema, etype, entities, joined or {},
                                 grant.caller.project_ids if grant.caller is not None else frozenset())
        for t, ids in sorted(by_type.items()):
            nf = name_field(schema.entities.get(t), t)
            if nf is not None and f"{t}.{nf}" in rules.hidden_fields:
                raise _reason(f"link names of {t} are hidden from the caller's group")
            vis = self.visibility(grant, t)
            if vis is None:
                continue
            want = sorted(i for i in ids if isinstance(i, int))
            if visible_ids(t, vis, want) != set(want):
                raise _reason(f"the answer links to {t} the caller may not see")

    def check_quarantine(self, grant: Grant) -> None:
        """Passthrough when shadow verification quarantined the caller's group."""
        if self.quarantined and grant.group in self.quarantined:
            gq = self.quarantined[grant.group]
            raise Passthrough(f"permission quarantine: group {grant.group} (mismatch #{gq.mismatch_id}: a shadow "
                              "read as one of its callers got another answer from the site; `sgcache shadow report`)")

    def policy_of(self, group: str) -> dict[str, Any]:
        """The policy as configured for a group name (`*`: the rest), as the status page shows it."""
        return self.policy.for_group(group).describe()

    def describe(self) -> dict[str, Any]:
        return {"source": SOURCE, "groups": self.policy.describe(),
                "quarantined": {g: q.to_json() for g, q in sorted(self.quarantined.items())}}

    async def answer_point(self, grant: Grant, method: str, params: dict[str, Any],
                           point: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
        """A restricted read of one row by id answered on the point-read path (no worker
        thread), when the caller's project ids and what the row holds decide every check;
        None: ask `answer`, which decides the rest."""
        caller, etype = grant.caller, params.get("type")
        if method != "read" or caller is None or grant.rules.policy not in RESTRICTED or _point(params) is None \
                or not (grant.rules.policy == "assigned_projects" or etype == "Project"):
            return None
        store = self._store()
        plan = self._point_plan(store, grant, params)
        if plan is None:
            return None
        joined, extra = plan
        result = await point({**params, "return_fields": [*(params.get("return_fields") or []), *extra]}
                             if extra else params)
        if result is None or not result["entities"]:
            return result  # None: not a ready point read; no row: nothing to keep from anyone
        ent = result["entities"][0]
        own = ent if etype != "Project" else None
        proj = own.get("project") if own is not None else {"type": "Project", "id": ent["id"]}
        if not (isinstance(proj, dict) and proj.get("type") == "Project" and proj.get("id") in caller.project_ids):
            return None  # not theirs, or no live project: `answer` says what the site shows
        if "project" in extra:
            ent.pop("project", None)
        schema = store.schema
        by_type = _links_by_type(schema, etype, result["entities"], joined, caller.project_ids)
        rules = grant.rules
        for t, ids in by_type.items():  # as `visibility` and `check_links` decide, without building conditions
            nf = name_field(schema.entities.get(t), t)
            if t in rules.hidden_types or (nf is not None and f"{t}.{nf}" in rules.hidden_fields):
                return None
            if rules.policy == "full" or t in rules.open_types:
                continue
            if not (t == "Project" and ids <= caller.project_ids and schema.get_field("Project", "users") is not None):
                return None  # a link the joined projects did not show visible: `answer` decides
        return result

    def _point_plan(self, store: Store, grant: Grant, params: dict[str, Any]
                    ) -> tuple[dict[str, list[str]], list[str]] | None:
        """`restrict`'s verdict on a point read and the fields it adds (joined projects, the
        row's own project), decided once per policy and shape: they depend on no value but
        the id. None: not restricted after all (`answer` decides); raises Passthrough."""
        caller = grant.caller
        assert caller is not None
        if caller.user_type != "HumanUser":
            raise _reason("restricted policies apply to known HumanUsers only")
        unprimed = self._unprimed()
        for t in RESTRICTED_TYPES:  # changes while serving: checked every time
            if t not in store or t in unprimed:
                raise _reason(f"{t} is not cached: assignments unknown")
        fields = params.get("return_fields") or []
        key = None
        if set(params) <= _POINT_KEYS and isinstance(fields, list) and all(type(f) is str for f in fields):
            key = (grant.rules, params.get("type"), tuple(fields), params.get("return_only", "active"),
                   params.get("include_archived_projects", True) is True, params.get("api_return_image_urls"))
            if self._point_schema is not store.schema or len(self._point_plans) > 1000:
                self._point_plans, self._point_schema = {}, store.schema
            try:
                hit = self._point_plans.get(key)
            except TypeError:  # an unhashable value where a name or flag belongs: decided each time
                hit = key = None
            if hit is not None:
                if isinstance(hit, str):
                    raise Passthrough(hit)
                return hit[0]
        try:
            r = self.restrict(grant, "read", params)
        except Passthrough as p:
            if key is not None:
                self._point_plans[key] = p.reason
            raise
        plan = None
        if r.params is not params:
            etype = params["type"]
            joined = self._joined_projects(store, grant, etype, params)
            extra = [x for xs in joined.values() for x in xs]
            if etype != "Project" and "project" not in fields:
                extra.append("project")
            plan = (joined, extra)
        if key is not None:
            self._point_plans[key] = (plan,)
        return plan

    def _joined_projects(self, store: Store, grant: Grant, etype: str, params: dict[str, Any]) -> dict[str, list[str]]:
        """Return field -> `field.Type.project` paths telling whether its links are the
        caller's (assigned_projects: a linked row is visible iff its project is theirs)."""
        if grant.rules.policy != "assigned_projects" or grant.caller is None:
            return {}
        out: dict[str, list[str]] = {}
        schema = store.schema
        for f in params.get("return_fields") or []:
            fs = schema.get_field(etype, f) if isinstance(f, str) and "." not in f else None
            if fs is None or fs.data_type != "entity":
                continue
            extra = [f"{f}.{t}.project" for t in fs.valid_types
                     if t != "Project" and t in store and t not in grant.rules.open_types
                     and self._project_scoped(schema, t) and "project" in store[t].fields]
            if extra:
                out[f] = extra
        return out

    def answer(self, service: Any, grant: Grant, method: str, params: dict[str, Any],
               route: Route | None = None) -> dict[str, Any]:
        """A read or summarize as this caller may see it (blocking), or Passthrough; on
        `route`'s replica when given (the caller's rows are as current there as for anyone)."""
        self.check_quarantine(grant)
        r = self.restrict(grant, method, params)
        gate = getattr(service, "read_gate", None)
        reader = service.reader
        store: Store = service.store
        etype = params["type"]
        caller = grant.caller
        by_project = grant.rules.policy == "assigned_projects" or etype == "Project"

        def run(conn: Connection, p: dict[str, Any]) -> dict[str, Any]:
            if gate is not None:  # types being rebuilt or unprimed: Passthrough
                gate(p)
            return reader.read(conn, p)

        pk = _point(params) if method == "read" and by_project and r.params is not params else None
        # One row by id: linked rows' projects joined into the same query
        # (`sg_sequence.Sequence.project`), so its link checks need no query of their own;
        # taken out of the answer after. Many rows: the links' projects are read after, by
        # index, for the ids in the page only (joined, every matching row before the sort
        # and limit would pay for two more joins).
        joined = self._joined_projects(store, grant, etype, params) if pk is not None else {}
        extra = [x for xs in joined.values() for x in xs]
        if pk is not None and etype != "Project" and "project" not in (params.get("return_fields") or []):
            extra.append("project")  # the row's own project (and the same plan as `answer_point`)

        def with_joined(p: dict[str, Any]) -> dict[str, Any]:
            if not extra:
                return p
            return {**p, "return_fields": [*(p.get("return_fields") or []), *extra]}

        def visible_ids(conn: Connection, t: str, vis: list[Any], ids: list[int]) -> set[int]:
            if caller is not None and (t == "Project" or grant.rules.policy == "assigned_projects"):
                return _in_projects(store, conn, t, ids, caller.project_ids)  # the same rule, by index
            seen: set[int] = set()
            for i in range(0, len(ids), MAX_PAGE):
                chunk = ids[i:i + MAX_PAGE]
                got = run(conn, {"type": t, "return_fields": [], "filters": {
                    "logical_operator": "and", "conditions": [{"path": "id", "relation": "in", "values": chunk}, *vis]},
                    "paging": {"entities_per_page": len(chunk), "current_page": 1}})
                seen.update(e["id"] for e in got["entities"])
            return seen

        def on(conn: Connection) -> dict[str, Any]:
            if pk is not None:
                # One row by id: read it as anyone would (the engine's point path), then
                # keep it only if its project is the caller's.
                result = run(conn, with_joined(params))
                if result["entities"] and caller is not None:
                    shown = result["entities"][0].get("project") if etype != "Project" else None
                    if isinstance(shown, dict) and shown.get("type") == "Project":  # no lookup
                        mine = shown.get("id") in caller.project_ids
                    else:
                        mine = bool(_in_projects(store, conn, etype, [pk], caller.project_ids, strict=True))
                    if not mine:  # not theirs: the restricted read says what is
                        result = run(conn, with_joined(r.params))
                if "project" in extra:
                    for ent in result["entities"]:
                        ent.pop("project", None)
            else:
                if r.null_project is not None and _has_null_project(store, conn, etype):
                    # whether the site shows rows without a project is not documented
                    only = params.get("return_only", "active") if method == "read" else "active"
                    probe = run(conn, {"type": etype, "filters": r.null_project, "return_fields": [],
                                       "return_only": only, "paging": {"entities_per_page": 1, "current_page": 1},
                                       **({"include_archived_projects": params["include_archived_projects"]}
                                          if "include_archived_projects" in params else {})})
                    if probe["entities"]:
                        raise _reason(f"rows of {etype} without a project match")
                if method == "summarize":
                    if gate is not None:
                        gate(r.params)
                    return Summarizer(reader).summarize(conn, r.params)
                result = run(conn, with_joined(r.params))
            self.check_links(grant, etype, result.get("entities") or [],
                             lambda t, vis, ids: visible_ids(conn, t, vis, ids), joined)
            return result

        if route is not None:  # a replica (store/replicas.py), else the primary
            return route.run(on)
        with store.engine.connect() as conn:
            return on(conn)


#: Data types whose values are never links on the wire: an answer's links are looked for
#: in the other fields only (entity, multi_entity, addressing, url, serializable, ...).
NO_LINKS = frozenset({"text", "list", "status_list", "entity_type", "color", "uuid", "footage", "number",
                      "percent", "duration", "timecode", "float", "currency", "checkbox", "date", "date_time"})


#: (type, an answer's keys, joined fields) -> the fields that may hold links, for the schema
#: in `_LINK_FIELDS_SCHEMA` (a schema change starts over).
_LINK_FIELDS: dict[tuple[Any, ...], list[tuple[str, list[str] | None]]] = {}
_LINK_FIELDS_SCHEMA: list[Any] = []


def _links_by_type(schema: Any, etype: str, entities: list[dict[str, Any]], joined: Mapping[str, list[str]],
                   projects: frozenset[int]) -> dict[str, set[int]]:
    """Type -> ids of the links in these entities, less those a joined `field.Type.project`
    shows to be in one of the caller's projects (the joined fields are taken out)."""
    if not entities:
        return {}
    extras = [x for xs in joined.values() for x in xs]
    key = (etype, tuple(entities[0]), tuple(joined))
    fields = _LINK_FIELDS.get(key) if _LINK_FIELDS_SCHEMA and _LINK_FIELDS_SCHEMA[0] is schema else None
    if fields is None:
        if not _LINK_FIELDS_SCHEMA or _LINK_FIELDS_SCHEMA[0] is not schema or len(_LINK_FIELDS) > 1000:
            _LINK_FIELDS.clear()
            _LINK_FIELDS_SCHEMA[:] = [schema]
        skip = {"type", "id", *extras}
        fields = []
        for k in entities[0]:
            fs = schema.get_field(etype, k) if k not in skip else None
            if k not in skip and (fs is None or fs.data_type not in NO_LINKS):
                fields.append((k, joined.get(k)))
        _LINK_FIELDS[key] = fields
    by_type: dict[str, set[int]] = {}
    for ent in entities:
        pops = {x: ent.pop(x, None) for x in extras} if extras else None
        for f, via in fields:
            v = ent.get(f)
            if v is None:
                continue
            for link in (v if isinstance(v, list) else (v,)):
                if not (isinstance(link, dict) and "id" in link):
                    continue
                t = link.get("type")
                if not isinstance(t, str):
                    continue
                if via is not None and pops is not None:
                    jp = pops.get(f"{f}.{t}.project")
                    if isinstance(jp, dict) and jp.get("type") == "Project" and jp.get("id") in projects:
                        continue  # in one of the caller's projects
                ids = by_type.get(t)
                if ids is None:
                    ids = by_type[t] = set()
                ids.add(link["id"])
    return by_type


def _point(params: dict[str, Any]) -> int | None:
    """N when the read is exactly `id is N` on its first page without counts."""
    filters = params.get("filters")
    conds = filters.get("conditions") if isinstance(filters, dict) and filters.get("logical_operator", "and") == "and" \
        and set(filters) <= {"logical_operator", "conditions"} else None
    paging = params.get("paging") or {}
    if not isinstance(conds, list) or len(conds) != 1 or params.get("return_paging_info") \
            or not isinstance(paging, dict) or paging.get("current_page", 1) != 1:
        return None
    c = conds[0]
    if not isinstance(c, dict) or set(c) != {"path", "relation", "values"} or c["path"] != "id" \
            or c["relation"] != "is" or not isinstance(c["values"], list) or len(c["values"]) != 1:
        return None
    v = c["values"][0]
    return v if type(v) is int else None


def _in_projects(store: Store, conn: Connection, etype: str, ids: list[int], projects: frozenset[int],
                 strict: bool = False) -> set[int]:
    """Which of these rows are in the caller's projects (a Project: is one of them). A row
    without a project raises Passthrough when `strict` (the site's rule is not documented);
    otherwise it is not counted, so the caller of a link check passes the read through."""
    if etype == "Project":
        return {i for i in ids if i in projects}
    t = store[etype].table
    stmt = _PROJECT_OF.get(t)
    if stmt is None:
        stmt = _PROJECT_OF[t] = select(t.c.id, t.c.project__type, t.c.project__id).where(
            t.c.id.in_(bindparam("ids", expanding=True)))
    out: set[int] = set()
    for i in range(0, len(ids), 500):
        rows = conn.execute(stmt, {"ids": ids[i:i + 500]}).all()
        for rid, ptype, pid in rows:
            if pid is None and strict:
                raise _reason(f"{etype} {rid} has no project")
            if ptype == "Project" and pid in projects:
                out.add(rid)
    return out


#: table -> SELECT id, project of its rows by id (built once: building costs more than running it).
_PROJECT_OF: dict[Any, Any] = {}


def _has_null_project(store: Store, conn: Connection, etype: str) -> bool:
    """Whether any row of `etype` has no project (by the link's index)."""
    t = store[etype].table
    return conn.execute(select(t.c.id).where(t.c.project__id.is_(None)).limit(1)).first() is not None


def unprimed_types(service: Any) -> frozenset[str]:
    """Types not primed by a full scan or being rebuilt, as the server's read gate knows them."""
    gate = getattr(service, "read_gate", None)
    readiness = getattr(gate, "readiness", None)
    return readiness.unprimed() | readiness.rebuilding() if readiness is not None else frozenset()


@dataclass
class Restricted:
    """A request as the engine should answer it: `params` (visibility AND-ed on), and the
    filters whose match must be empty (rows without a project: the site's rule unknown)."""

    params: dict[str, Any]
    null_project: dict[str, Any] | None
    rules: GroupPolicy
    caller: Caller | None


def _filter_paths(group: Group) -> Iterable[FieldPath]:
    for c in group.conditions:
        if isinstance(c, Group):
            yield from _filter_paths(c)
        else:
            yield c.path


def _filter_links(node: Any) -> Iterable[dict[str, Any]]:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if "type" in n and "id" in n:
                yield n
            else:
                stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)

