"""The permission policy: per permission group, which of a few policies the site applies.

Read from `SGCACHE_PERMISSIONS` (inline JSON, a JSON or TOML file, or empty for the
site's default roles); `permissions.py` applies it to each caller. Kept apart so the
policy's shape and its validation read on their own, and the config's errors name the
group and key at fault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = "https://support.shotgunsoftware.com/hc/en-us/articles/219030638-Permissions"
POLICIES = ("full", "assigned_projects", "vendor", "passthrough")
RESTRICTED = ("assigned_projects", "vendor")
#: The key naming every group the policy does not name (and callers of no known group).
ANY_GROUP = "*"
#: The site's default roles whose reads the support article describes exactly. Manager
#: ("certain entities restricted by default", not listed) is left to the site.
DEFAULT_POLICY: dict[str, Any] = {
    "Admin": "full", "API Admin": "full", "Artist": "assigned_projects", "Vendor": "vendor"}


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
