"""The policy a studio writes, and who the cache takes a caller to be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgcache.config import load_config
from sgcache.serve.permission_policy import DEFAULT_POLICY, load_policy, parse_policy
from sgcache.serve.permissions import Caller, Grant, Permissions, effective_user


def test_default_policy_is_the_support_articles_roles() -> None:
    p = load_policy("")
    assert p.for_group("Admin").full and p.for_group("API Admin").full
    assert p.for_group("Artist").policy == "assigned_projects"
    assert p.for_group("Vendor").policy == "vendor"
    # Manager's restricted entities are not listed anywhere: the site answers for them
    assert p.for_group("Manager").policy == "passthrough"
    assert p.for_group("Someone's custom group").policy == "passthrough"
    assert p.for_group(None).policy == "passthrough"  # a caller of no known group
    assert set(DEFAULT_POLICY) == {"Admin", "API Admin", "Artist", "Vendor"}


def test_policy_inline_json_file_or_config_table(tmp_path: Path) -> None:
    spec = {"Client": {"policy": "assigned_projects", "hidden_types": ["Note"], "hidden_fields": ["HumanUser.email"]},
            "*": "full"}
    inline = load_policy(json.dumps(spec))
    f = tmp_path / "perm.toml"
    f.write_text('[Client]\npolicy = "assigned_projects"\nhidden_types = ["Note"]\n'
                 'hidden_fields = ["HumanUser.email"]\n["*"]\npolicy = "full"\n')
    assert load_policy(str(f)) == inline
    j = tmp_path / "perm.json"
    j.write_text(json.dumps(spec))
    assert load_policy(str(j)) == inline
    conf = tmp_path / "sgcache.toml"
    conf.write_text('[permissions]\nArtist = "passthrough"\n')
    assert load_policy(load_config(conf, env={}).permissions).for_group("Artist").policy == "passthrough"
    assert inline.for_group("Anyone").full and inline.needs_caller
    # a site whose every user sees everything says so, and no caller needs looking up
    assert load_policy('{"*": "full"}').needs_caller is False


@pytest.mark.parametrize("bad", [{"Artist": "everything"}, {"Artist": {"policy": "full", "hidden": ["x"]}},
                                 {"Artist": {"hidden_fields": ["email"]}}, ["Admin"]])
def test_a_policy_the_cache_cannot_read_is_refused_at_start(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_policy(bad)


@pytest.mark.parametrize("auth, who", [
    ({"script_name": "pipe", "script_key": "k"}, ("ApiUser", "pipe")),
    ({"script_name": "pipe", "script_key": "k", "sudo_as_login": "ann"}, ("HumanUser", "ann")),
    ({"user_login": "bob", "user_password": "p"}, ("HumanUser", "bob")),
    ({"user_login": "bob", "user_password": "p", "sudo_as_login": "ann"}, ("HumanUser", "ann")),
    ({"session_token": "t"}, None),  # nobody the cache can name: the site answers
    ({"script_name": "pipe", "script_key": "k", "sudo_as_login": ""}, None),
    ({"script_name": "pipe", "script_key": "k", "sudo_as_login": 5}, None),
])
def test_the_effective_user_is_the_sudo_target_else_the_login_else_the_script(auth: dict, who: object) -> None:
    assert effective_user(auth) == who


def test_a_grant_is_reused_for_ttl_seconds_only() -> None:
    now = [0.0]
    perms = Permissions(load_policy(""), lambda: None, ttl=1.0, clock=lambda: now[0])  # type: ignore[arg-type,return-value]
    auth = {"script_name": "pipe", "script_key": "k"}
    assert perms.cached(auth) is None
    perms._grants[("ApiUser", "pipe")] = (0.0, Grant(Caller("ApiUser", 1, "API Admin"), perms.policy.for_group("API Admin")))
    assert perms.cached(auth) is not None and perms.cached(auth).full  # type: ignore[union-attr]
    now[0] = 1.5
    assert perms.cached(auth) is None
    # a session token is never looked up: its group is unknown, and unknown groups pass through
    assert perms.cached({"session_token": "t"}).rules.policy == "passthrough"  # type: ignore[union-attr]
