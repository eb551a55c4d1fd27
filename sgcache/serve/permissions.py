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
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol import errors
from ..read.engine import MAX_PAGE
from ..read.filters import FieldPath, Group, parse_filters, resolve_path
from ..read.names import name_field
from ..read.passthrough import Passthrough
from ..read.summarize import Summarizer
from ..store.field_types import fold
from ..store.tables import ACTIVE, Store

SOURCE = "https://support.shotgunsoftware.com/hc/en-us/articles/219030638-Permissions"
POLICIES = ("full", "assigned_projects", "vendor", "passthrough")
RESTRICTED = ("assigned_projects", "vendor")
#: The key naming every group the policy does not name (and callers of no known group).
ANY_GROUP = "*"
#: The site's default roles whose reads the support article describes exactly. Manager
#: ("certain entities restricted by default", not listed) is left to the site.
DEFAULT_POLICY: dict[str, Any] = {
    "Admin": "full", "API Admin": "full", "Artist": "assigned_projects", "Vendor": "vendor"}
#: Types the caller's group is read from: all must be cached and primed.
CALLER_TYPES = ("HumanUser", "ApiUser", "PermissionRuleSet")
#: What restricted policies read: projects' users, groups' users.
RESTRICTED_TYPES = ("Project", "Group")


def _reason(text: str) -> Passthrough:
    return Passthrough(f"permission: {text}")


@dataclass(frozen=True)
class GroupPolicy:
    """What one permission group sees: a policy, plus types and fields the site hides from
    it, plus types it sees every row of (`open_types`: a site's own knowledge)."""

    policy: str
    hidden_types: frozenset[str] = frozenset()
    hidden_fields: frozenset[str] = frozenset()  # "Type.field"
    open_types: frozenset[str] = frozenset()

    @property
    def full(self) -> bool:
        """Answered as before permissions existed: nothing to add, nothing to check."""
        return self.policy == "full" and not self.hidden_types and not self.hidden_fields

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.policy}
        for k in ("hidden_types", "hidden_fields", "open_types"):
            if getattr(self, k):
                out[k] = sorted(getattr(self, k))
        return out


PASSTHROUGH = GroupPolicy("passthrough")


@dataclass(frozen=True)
class Policy:
    """Group code -> GroupPolicy; `ANY_GROUP` for the rest (default: passthrough)."""

    groups: Mapping[str, GroupPolicy]

    def for_group(self, code: str | None) -> GroupPolicy:
        if code is not None and code in self.groups:
            return self.groups[code]
        return self.groups.get(ANY_GROUP, PASSTHROUGH)

    @property
    def needs_caller(self) -> bool:
        """False when every caller, of any group or none, is answered in full."""
        return any(not g.full for g in self.groups.values()) or not self.for_group(None).full

    def describe(self) -> dict[str, Any]:
        out = {k: v.describe() for k, v in sorted(self.groups.items())}
        out.setdefault(ANY_GROUP, self.for_group(None).describe())
        return out


def _group_policy(name: str, spec: Any) -> GroupPolicy:
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"permissions: group {name!r}: expected a policy name or an object")
    unknown = set(spec) - {"policy", "hidden_types", "hidden_fields", "open_types"}
    if unknown:
        raise ValueError(f"permissions: group {name!r}: unknown keys {sorted(unknown)}")
    policy = spec.get("policy", "full")
    if policy not in POLICIES:
        raise ValueError(f"permissions: group {name!r}: policy must be one of {POLICIES}, got {policy!r}")
    lists = {}
    for k in ("hidden_types", "hidden_fields", "open_types"):
        v = spec.get(k, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ValueError(f"permissions: group {name!r}: {k} must be a list of names")
        lists[k] = frozenset(v)
    bad = [f for f in lists["hidden_fields"] if f.count(".") != 1]
    if bad:
        raise ValueError(f"permissions: group {name!r}: hidden_fields are Type.field, got {bad}")
    return GroupPolicy(policy, lists["hidden_types"], lists["hidden_fields"], lists["open_types"])


def parse_policy(data: Any) -> Policy:
    if not isinstance(data, dict):
        raise ValueError("permissions: expected an object of group name -> policy")
    return Policy({str(k): _group_policy(str(k), v) for k, v in data.items()})


def load_policy(setting: str) -> Policy:
    """The policy from `SGCACHE_PERMISSIONS`: inline JSON, a JSON or TOML file, or empty
    for the site's default roles (DEFAULT_POLICY)."""
    text = setting.strip()
    if not text:
        return parse_policy(DEFAULT_POLICY)
    if text.startswith("{"):
        return parse_policy(json.loads(text))
    path = Path(text)
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        import tomllib
        data: Any = tomllib.loads(raw)
        data = data.get("permissions", data)
    else:
        data = json.loads(raw)
    return parse_policy(data)


# -- who is calling ---------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """The effective user, their permission group and the Groups they are in."""

    user_type: str
    user_id: int
    group: str | None
    group_ids: tuple[int, ...] = ()

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

    # -- the caller ----------------------------------------------------------------------
    def cached(self, auth: Any) -> Grant | None:
        """The grant for these credentials if known and fresh (no database access)."""
        if not self.policy.needs_caller:
            return Grant(None, self.policy.for_group(None))
        who = effective_user(auth)
        if who is None:
            return Grant(None, self.policy.for_group(None))
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
        g = Grant(caller, self.policy.for_group(caller.group if caller else None))
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
        groups: tuple[int, ...] = ()
        if utype == "HumanUser" and "Group" in store and "users" in store["Group"].assoc \
                and "Group" not in self._unprimed():
            g = store["Group"]
            a = g.assoc["users"]
            groups = tuple(sorted(conn.execute(
                select(a.c.parent_id).select_from(a.join(g.table, a.c.parent_id == g.table.c.id)).where(
                    a.c.child_type == "HumanUser", a.c.child_id == uid, g.table.c[ACTIVE])).scalars()))
        return Caller(utype, int(uid), code if isinstance(code, str) else None, groups)

    # -- a request ---------------------------------------------------------------------------
    def restrict(self, grant: Grant, method: str, params: dict[str, Any]) -> "Restricted":
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
        if etype == "Project":
            if schema.get_field("Project", "users") is None:
                raise _reason("Project.users is not in the schema")
            return [{"path": "users", "relation": "is", "values": [me]}]
        if not self._project_scoped(schema, etype):
            raise _reason(f"no documented rule for {etype} under {rules.policy}")
        in_project = {"path": "project.Project.users", "relation": "is", "values": [me]}
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
    def check_links(self, grant: Grant, entities: list[dict[str, Any]],
                    visible_ids: Callable[[str, list[Any], list[int]], set[int]]) -> None:
        """Passthrough unless every link in the answer points at an entity the caller may
        see, and its name at a field they may see. `visible_ids(type, conditions, ids)`
        runs a read of those ids under those conditions."""
        rules = grant.rules
        if rules.full:
            return
        by_type: dict[str, set[int]] = {}
        for ent in entities:
            for k, v in ent.items():
                if k in ("type", "id"):
                    continue
                for link in (v if isinstance(v, list) else [v]):
                    if isinstance(link, dict) and isinstance(link.get("type"), str) and "id" in link:
                        by_type.setdefault(link["type"], set()).add(link["id"])
        schema = self._store().schema
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

    def describe(self) -> dict[str, Any]:
        return {"source": SOURCE, "groups": self.policy.describe()}

    def answer(self, service: Any, grant: Grant, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A read or summarize as this caller may see it (blocking), or Passthrough."""
        r = self.restrict(grant, method, params)
        gate = getattr(service, "read_gate", None)
        reader = service.reader
        base = {k: v for k, v in params.items() if k in ("type", "include_archived_projects")}

        def run(conn: Connection, p: dict[str, Any]) -> dict[str, Any]:
            if gate is not None:  # types being rebuilt or unprimed: Passthrough
                gate(p)
            return reader.read(conn, p)

        with service.store.engine.connect() as conn:
            if r.null_project is not None:  # whether the site shows such rows is not documented
                only = params.get("return_only", "active") if method == "read" else "active"
                probe = run(conn, {**base, "filters": r.null_project, "return_fields": [], "return_only": only,
                                   "paging": {"entities_per_page": 1, "current_page": 1}})
                if probe["entities"]:
                    raise _reason(f"rows of {params['type']} without a project match")
            if method == "summarize":
                if gate is not None:
                    gate(r.params)
                return Summarizer(reader).summarize(conn, r.params)
            result = run(conn, r.params)

            def visible_ids(etype: str, vis: list[Any], ids: list[int]) -> set[int]:
                seen: set[int] = set()
                for i in range(0, len(ids), MAX_PAGE):
                    chunk = ids[i:i + MAX_PAGE]
                    got = run(conn, {"type": etype, "return_fields": [], "filters": {
                        "logical_operator": "and", "conditions": [
                            {"path": "id", "relation": "in", "values": chunk}, *vis]},
                        "paging": {"entities_per_page": len(chunk), "current_page": 1}})
                    seen.update(e["id"] for e in got["entities"])
                return seen

            self.check_links(grant, result.get("entities") or [], visible_ids)
        return result


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
    extra: dict[str, Any] = field(default_factory=dict)


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

