"""Authentication like the site: scripts, users, session tokens, sudo; failures are code 102."""

from __future__ import annotations

from typing import Any

import pytest
import shotgun_api3

from tests.support.procs import MockProcess


def test_script_auth(world_site: MockProcess) -> None:
    sg = world_site.sg(script_name="tester", api_key="secret-key")
    assert sg.find_one("Project", [["id", "is", 1]])["id"] == 1


@pytest.mark.parametrize("kw", [
    {"script_name": "tester", "api_key": "wrong"},
    {"script_name": "nobody", "api_key": "secret-key"},
    {"login": "zoe", "password": "wrong"},
    {"login": "nobody", "password": "pw-zoe"},
    {"login": "dis", "password": "pw-dis"},  # inactive user
    {"session_token": "not-a-token"},
])
def test_bad_credentials_are_authentication_faults(world_site: MockProcess, kw: dict[str, Any]) -> None:
    sg = world_site.sg(**kw)
    with pytest.raises(shotgun_api3.AuthenticationFault):
        sg.find("Project", [])


def test_human_user_login_and_authenticate_human_user(world_site: MockProcess) -> None:
    sg = world_site.sg(login="zoe", password="pw-zoe")
    row = sg.create("Other", {"code": "by zoe"}, ["created_by"])
    assert row["created_by"] == {"type": "HumanUser", "id": 1, "name": "Zoë Müller"}
    admin = world_site.sg()
    user = admin.authenticate_human_user("zoe", "pw-zoe")
    assert user["id"] == 1 and user["login"] == "zoe"


def test_session_token_round_trip(world_site: MockProcess) -> None:
    token = world_site.sg(login="ann", password="pw-ann").get_session_token()
    sg = world_site.sg(session_token=token)
    row = sg.create("Other", {"code": "by session"}, ["created_by"])
    assert row["created_by"]["id"] == 2 and row["created_by"]["type"] == "HumanUser"


def test_sudo_as_login(world_site: MockProcess) -> None:
    sg = world_site.sg(sudo_as_login="ann")
    row = sg.create("Other", {"code": "sudo"}, ["created_by", "updated_by"])
    assert row["created_by"]["type"] == "HumanUser" and row["created_by"]["id"] == 2
    ev = sg.find_one("EventLogEntry", [["entity", "is", {"type": "Other", "id": row["id"]}]], ["user"],
                     order=[{"field_name": "id", "direction": "asc"}])
    assert ev["user"]["id"] == 2 and ev["user"]["type"] == "HumanUser"


def test_sudo_to_unknown_login_is_a_plain_fault(world_site: MockProcess) -> None:
    sg = world_site.sg(sudo_as_login="nobody")
    with pytest.raises(shotgun_api3.Fault) as e:
        sg.find("Project", [])
    assert not isinstance(e.value, shotgun_api3.AuthenticationFault)
    assert str(e.value).startswith("The user does not have permission to 'sudo':")


def test_users_cannot_sudo(world_site: MockProcess) -> None:
    sg = world_site.sg(login="zoe", password="pw-zoe", sudo_as_login="ann")
    with pytest.raises(shotgun_api3.Fault, match="sudo"):
        sg.find("Project", [])


def test_passwords_are_masked_and_not_filterable(world_site: MockProcess) -> None:
    sg = world_site.sg()
    assert sg.find_one("HumanUser", [["id", "is", 1]], ["password_proxy"])["password_proxy"] == "*******"
    with pytest.raises(shotgun_api3.Fault):
        sg.find("HumanUser", [["password_proxy", "is", "pw-zoe"]])
