"""`sgcache scan` (the command) is the serving leader's interval scan: what an events-off
script did is caught whether the operator runs the command or the server's timer fires."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.procs import ROOT, MockProcess

from .support import NOEVENTS, CacheEnv, CacheView, site_one


def scan_command(cache: CacheEnv) -> str:
    res = subprocess.run([sys.executable, "-m", "sgcache.cli", "scan"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **cache.env, "PYTHONPATH": str(ROOT)}, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_scan_command_catches_silent_retirements_and_the_other_side_of_links(
        mock: MockProcess, cache: CacheEnv, view: CacheView) -> None:
    bot = mock.sg(script_name=NOEVENTS[0], api_key=NOEVENTS[1])
    site = mock.sg()
    asset = site.find_one("Asset", [], ["updated_at"], order=[{"field_name": "id", "direction": "desc"}])
    assert bot.delete("Asset", asset["id"]) is True
    # The premise: this retirement left `updated_at` alone, so only the retired sets tell.
    assert site.find_one("Asset", [["id", "is", asset["id"]]], ["updated_at"],
                         retired_only=True)["updated_at"] == asset["updated_at"]
    task = site.find_one("Task", [["entity", "type_is", "Shot"]], ["entity", "project"])
    old_shot = task["entity"]
    new_shot = site.find_one("Shot", [["id", "is_not", old_shot["id"]], ["project", "is", task["project"]]], [])
    bot.update("Task", task["id"], {"entity": {"type": "Shot", "id": new_shot["id"]}})

    assert "interval scan" in scan_command(cache)

    assert view.one("Asset", asset["id"], ["code"])["__retired"] is True
    for shot in (old_shot, new_shot):  # Shot.tasks: the other side of Task.entity
        assert view.one("Shot", shot["id"], ["tasks"]) == site_one(site, "Shot", shot["id"], ["tasks"])
    assert bot.revive("Asset", asset["id"]) is True
    scan_command(cache)
    assert view.one("Asset", asset["id"], ["code", "shots"]) == site_one(site, "Asset", asset["id"], ["code", "shots"])
