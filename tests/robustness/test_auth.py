"""Nobody reads from the cache whom the site would refuse, and no secret reaches a log.

The real `shotgun_api3` client talks to `sgcache serve` (real processes on loopback)
with every kind of credential the site accepts. Upstream reads are counted with the
mock site's stats: each credential costs one verification, then reads are local.
The serve processes run at DEBUG level, plain and JSON, and their whole log output is
scanned for every secret used here.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest
import shotgun_api3

from ..e2e.harness import Cache, Site
from .conftest import OTHER_SCRIPT
from .servers import Primed, post_raw, rpc, serve

PASSWORD = "pw-Rob-9c1e77d2"
LOGIN = "robustness.user"
TTL = 3.0
STALE_TOKEN = "5f4dcc3b5aa765d61d8327deb882cf99"
BAD_KEY = "not-the-key-0b7e11c94a"
READ_FROM_CACHE = ("Shot", [["code", "contains", "0"]], ["code", "sg_status_list"])
#: Callers created here are not in the (unsynced) cache, so their permission group is
#: unknown; the subject here is credentials: a site where every caller sees everything.
EVERYONE_FULL = '{"*": "full"}'


@pytest.fixture(scope="module")
def user(site: Site) -> dict[str, Any]:
    """A HumanUser with a password, created on the site through its API."""
    sg = site.sg()
    found = sg.find_one("HumanUser", [["login", "is", LOGIN]])
    if found:
        return found
    return sg.create("HumanUser", {"login": LOGIN, "name": "Robustness User", "password_proxy": PASSWORD,
                                   "sg_status_list": "act"})


@pytest.fixture(scope="module")
def cache(primed: Primed, user: dict[str, Any]) -> Iterator[Cache]:
    """DEBUG-level JSON logs; a TTL longer than the module takes."""
    c = serve(primed, "--no-sync", debug=True, json_logs=True, auth_ttl=60, permissions=EVERYONE_FULL)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def short_ttl_cache(primed: Primed, user: dict[str, Any]) -> Iterator[Cache]:
    """DEBUG-level plain logs; verdicts expire after TTL seconds."""
    c = serve(primed, "--no-sync", debug=True, auth_ttl=TTL, permissions=EVERYONE_FULL)
    yield c
    c.stop()


def reads(site: Site) -> int:
    return site.stats()["requests"].get("read", 0)


def served_once_then_local(site: Site, sg: shotgun_api3.Shotgun) -> None:
    """The first read verifies the caller (one upstream read); the next ten are local."""
    site.reset_stats()
    first = sg.find(*READ_FROM_CACHE)
    assert first and reads(site) == 1
    for _ in range(10):
        assert sg.find(*READ_FROM_CACHE) == first
    assert reads(site) == 1


def assert_refused(cache: Cache, auth: dict[str, Any]) -> None:
    """Code 102 and nothing else: no results, no entities."""
    body = rpc(cache.url, "read", auth, {"type": "Shot", "return_fields": ["code"], "filters": {
        "logical_operator": "and", "conditions": []}}).json()
    assert body.get("exception") is True and body["error_code"] == 102
    assert "results" not in body and "entities" not in str(body)


def test_script_key_is_verified_once_then_served_locally(site: Site, cache: Cache) -> None:
    served_once_then_local(site, cache.sg(site, connect=False))


def test_login_and_password_are_verified_once_then_served_locally(site: Site, cache: Cache) -> None:
    served_once_then_local(site, shotgun_api3.Shotgun(cache.url, login=LOGIN, password=PASSWORD))


def test_session_token_from_the_cache_works_like_the_sites(site: Site, cache: Cache) -> None:
    token = shotgun_api3.Shotgun(cache.url, login=LOGIN, password=PASSWORD).get_session_token()
    assert site.stats()["requests"].get("get_session_token", 0) >= 1  # passed through
    served_once_then_local(site, shotgun_api3.Shotgun(cache.url, session_token=token))


def test_sudo_as_login_is_verified_per_sudo_user(site: Site, cache: Cache) -> None:
    served_once_then_local(site, cache.sg(site, sudo_as_login="admin"))
    # A sudo the site refuses gets the site's own message (passed through), never data.
    want = site.sg(sudo_as_login="nobody_at_all")
    got = cache.sg(site, sudo_as_login="nobody_at_all")
    with pytest.raises(shotgun_api3.Fault) as site_says:
        want.find(*READ_FROM_CACHE)
    with pytest.raises(shotgun_api3.Fault) as cache_says:
        got.find(*READ_FROM_CACHE)
    assert str(cache_says.value) == str(site_says.value)


def test_bad_key_is_refused_with_102_and_remembered(site: Site, cache: Cache) -> None:
    sg = cache.sg(site, api_key=BAD_KEY, connect=False)
    site.reset_stats()
    for _ in range(5):
        with pytest.raises(shotgun_api3.AuthenticationFault):
            sg.find(*READ_FROM_CACHE)
    assert reads(site) == 1  # refusals are remembered too: a flood of bad keys stays local
    assert_refused(cache, {"script_name": site.script_name, "script_key": BAD_KEY})


def test_bad_password_and_stale_session_token_are_refused(site: Site, cache: Cache) -> None:
    with pytest.raises(shotgun_api3.AuthenticationFault):
        shotgun_api3.Shotgun(cache.url, login=LOGIN, password=PASSWORD + "x").find(*READ_FROM_CACHE)
    with pytest.raises(shotgun_api3.AuthenticationFault):
        shotgun_api3.Shotgun(cache.url, session_token=STALE_TOKEN).find(*READ_FROM_CACHE)
    assert_refused(cache, {"session_token": STALE_TOKEN, "reject_if_expired": True})
    assert_refused(cache, {"user_login": LOGIN, "user_password": PASSWORD + "x"})


@pytest.mark.parametrize("auth", [
    None, "", [], {}, {"script_name": "x"}, {"script_key": "k"}, {"user_login": LOGIN},
    {"script_name": ["x"], "script_key": {"$ne": ""}}, {"session_token": 12345},
    {"user_login": LOGIN, "user_password": None}, {"script_name": "", "script_key": ""},
], ids=repr)
def test_malformed_credentials_are_refused_without_asking_the_site(site: Site, cache: Cache, auth: Any) -> None:
    site.reset_stats()
    assert_refused(cache, auth)
    assert reads(site) == 0


def test_verdicts_expire_after_auth_ttl(site: Site, short_ttl_cache: Cache) -> None:
    cache = short_ttl_cache
    name, key = "robustness_rekeyed_" + str(int(time.time() * 1000) % 10**8), "key-before-0a1b2c"
    script = site.sg().create("ApiUser", {"firstname": name, "salted_password": key})
    sg = cache.sg(site, script_name=name, api_key=key, connect=False)
    served_once_then_local(site, sg)
    site.sg().update("ApiUser", script["id"], {"salted_password": "key-after-3d4e5f"})
    assert sg.find(*READ_FROM_CACHE)  # still within the TTL: the verdict stands
    time.sleep(TTL + 0.2)
    with pytest.raises(shotgun_api3.AuthenticationFault):  # re-verified: the site now refuses
        sg.find(*READ_FROM_CACHE)


def test_concurrent_first_reads_share_one_verification(site: Site, cache: Cache) -> None:
    import concurrent.futures
    name, key = "robustness_burst_" + str(int(time.time() * 1000) % 10**8), "burst-key-77aa"
    site.sg().create("ApiUser", {"firstname": name, "salted_password": key})
    auth = {"script_name": name, "script_key": key}
    params = {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "and", "conditions": []},
              "paging": {"entities_per_page": 5, "current_page": 1}}
    site.reset_stats()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(lambda _: rpc(cache.url, "read", auth, params).json(), range(20)))
    assert all(len(b["results"]["entities"]) == 5 for b in bodies)
    assert reads(site) == 1


@pytest.mark.parametrize("logs", ["json", "plain"])
def test_no_secret_appears_in_any_log_line(site: Site, cache: Cache, short_ttl_cache: Cache, logs: str) -> None:
    cache = cache if logs == "json" else short_ttl_cache
    # Every path that logs: accepted, refused, passed through, malformed, internal.
    sg = cache.sg(site, connect=False)
    sg.find(*READ_FROM_CACHE)
    sg.find("Shot", [["created_at", "in_last", 3, "DAY"]], ["code"])  # passthrough
    token = shotgun_api3.Shotgun(cache.url, login=LOGIN, password=PASSWORD).get_session_token()
    shotgun_api3.Shotgun(cache.url, session_token=token).find(*READ_FROM_CACHE)
    for auth in ({"script_name": site.script_name, "script_key": BAD_KEY},
                 {"user_login": LOGIN, "user_password": PASSWORD + "x"},
                 {"session_token": STALE_TOKEN}, {"script_name": OTHER_SCRIPT[0], "script_key": OTHER_SCRIPT[1]}):
        rpc(cache.url, "read", auth, {"type": "Shot", "return_fields": ["code"], "filters": [["code", "is", BAD_KEY]]})
        rpc(cache.url, "nonexistent_method", auth, {"type": "Shot"})
        post_raw(cache.url, json.dumps({"method_name": "read", "params": [auth, {"type": "Shot", "filters": {
            "logical_operator": "and", "conditions": [
                {"path": "sg_cut_in", "relation": "is", "values": [float("inf")]}]}}]}).encode())
        post_raw(cache.url, b'{"method_name": "read", "params": [' + json.dumps(auth).encode() + b', {"type": "Shot"')
    time.sleep(0.3)
    text = cache.log.read_text() if cache.log else ""
    assert ("DEBUG" if logs == "plain" else '"level": "debug"') in text, "the server was meant to log at DEBUG"
    secrets = [site.script_key, BAD_KEY, PASSWORD, PASSWORD + "x", token, STALE_TOKEN, OTHER_SCRIPT[1]]
    leaks = [(s, line) for line in text.splitlines() for s in secrets if s in line]
    assert not leaks


def test_allow_list_refuses_other_scripts_without_asking_the_site(site: Site, primed: Primed) -> None:
    c = serve(primed, "--no-sync", allow_scripts=site.script_name, allow_logins="")
    try:
        assert c.sg(site, connect=False).find(*READ_FROM_CACHE)
        site.reset_stats()
        other = c.sg(site, script_name=OTHER_SCRIPT[0], api_key=OTHER_SCRIPT[1], connect=False)
        with pytest.raises(shotgun_api3.AuthenticationFault):
            other.find(*READ_FROM_CACHE)
        with pytest.raises(shotgun_api3.AuthenticationFault):  # nor by login
            shotgun_api3.Shotgun(c.url, login=LOGIN, password=PASSWORD, connect=False).find(*READ_FROM_CACHE)
        assert reads(site) == 0
        assert site.sg(script_name=OTHER_SCRIPT[0], api_key=OTHER_SCRIPT[1]).find(*READ_FROM_CACHE)  # site: fine
    finally:
        c.stop()
