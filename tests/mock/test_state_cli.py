"""Start-up options: --state save/reload, --schema with the real site schema, --api-user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import shotgun_api3

from tests.conftest import site_schema_fixture
from tests.support.procs import ROOT, running_mock


def test_state_is_saved_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "site.pkl"
    with running_mock("--state", str(state), "--api-user", "keeper:k1") as m:
        sg = m.sg()
        p = sg.create("Project", {"name": "kept"})
        sg.delete("Project", sg.create("Project", {"name": "retired"})["id"])
        assert m.save()["saved"] == str(state) and state.exists()
        sg.update("Project", p["id"], {"name": "kept after save"})
        creds = (m.script_name, m.script_key)
        last_event = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
    # stopped with SIGTERM: the state was saved again on the way out
    with running_mock("--state", str(state)) as m:
        assert (m.script_name, m.script_key) == creds
        sg = m.sg(script_name="keeper", api_key="k1")
        assert sg.find_one("Project", [["id", "is", p["id"]]], ["name"])["name"] == "kept after save"
        assert [r["name"] for r in sg.find("Project", [], ["name"], retired_only=True)] == ["retired"]
        new = sg.create("Project", {"name": "next"})
        assert new["id"] > p["id"]
        ev = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
        assert ev["id"] > last_event["id"]


def test_real_site_schema_loads_and_serves() -> None:
    with running_mock("--schema", str(site_schema_fixture()), "--api-user", "quiet:q:noevents") as m:
        sg = m.sg()
        schema = sg.schema_read()
        assert len(schema) == 77 and "CustomEntity01" in schema
        proj = sg.create("Project", {"name": "Real"})
        seq = sg.create("Sequence", {"code": "SQ1", "project": proj})
        shot = sg.create("Shot", {"code": "SH1", "project": proj, "sg_sequence": seq, "sg_cut_in": 1001,
                                  "tag_list": ["a"]}, ["sg_status_list"])
        row = sg.find_one("Shot", [["sg_sequence.Sequence.code", "is", "sq1"]],
                          ["code", "sg_sequence", "project.Project.name", "step_0", "image"])
        assert row["id"] == shot["id"] and row["sg_sequence"] == {"type": "Sequence", "id": seq["id"], "name": "SQ1"}
        assert row["project.Project.name"] == "Real" and row["step_0"] is None
        types = [e["event_type"] for e in sg.find("EventLogEntry", [], ["event_type"])]
        assert "Shotgun_Shot_New" in types
        quiet = m.sg(script_name="quiet", api_key="q")
        before = len(types)
        quiet.create("Shot", {"code": "SH2", "project": proj})
        assert len(sg.find("EventLogEntry", [])) == before
        with pytest.raises(shotgun_api3.Fault):
            sg.find("EventLogEntry", [["meta", "is", None]])


def test_bad_api_user_option_is_rejected() -> None:
    r = subprocess.run([sys.executable, "-m", "sgcache.cli", "mock", "--api-user", "nokey"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "NAME:KEY" in r.stderr


def test_demo_site_prints_its_own_credentials(studio_site) -> None:  # type: ignore[no-untyped-def]
    from sgcache.mock.demo import DEMO_CREDENTIALS
    assert (studio_site.script_name, studio_site.script_key) == DEMO_CREDENTIALS
    assert studio_site.sg().find_one("Shot", [])["type"] == "Shot"


def test_human_user_option_gives_demo_users_a_password() -> None:
    with running_mock("--demo", "300", "--human-user", "admin:pw1", "--human-user", "newbie:pw2") as m:
        sg = m.sg(login="admin", password="pw1")
        assert sg.find_one("HumanUser", [["login", "is", "admin"]], ["name"])["name"] == "Site Admin"
        assert m.sg(login="newbie", password="pw2").find_one("Project", [])["type"] == "Project"
        with pytest.raises(shotgun_api3.AuthenticationFault):
            m.sg(login="admin", password="wrong").find_one("Project", [])
