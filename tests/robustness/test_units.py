"""The verifier, the upstream client and the log scrubber in-process, on a fake site.

The site is an httpx.MockTransport, so clocks, failures and counts are exact; the
end-to-end tests next to this file show the same behaviour through real processes.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any, Callable

import httpx
import pytest

from sgcache.logs import configure, scrub
from sgcache.protocol import errors
from sgcache.serve.auth import AuthVerifier
from sgcache.upstream import Upstream, UpstreamUnavailable

GOOD = {"script_name": "s", "script_key": "right-key"}
BAD = {"script_name": "s", "script_key": "wrong-key"}


class FakeSite:
    """Answers api3 calls: accepts GOOD, refuses anything else; can fail on demand."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: int | str | None = None  # an HTTP status, "drop", "hang" or None
        self.delay = 0.0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body["method_name"])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail == "drop":
            raise httpx.RemoteProtocolError("dropped", request=request)
        if self.fail == "hang":
            await asyncio.sleep(3600)
        if isinstance(self.fail, int):
            return httpx.Response(self.fail, text="injected")
        auth = body["params"][0] if body["params"] else {}
        if body["method_name"] != "info" and auth.get("script_key") != GOOD["script_key"]:
            return httpx.Response(200, json=errors.auth_failed("Can't authenticate script.").body())
        return httpx.Response(200, json={"results": {"entities": [], "paging_info": {"has_next_page": False}}})


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(site: FakeSite, **kw: Any) -> Upstream:
    return Upstream("http://site", transport=httpx.MockTransport(site.handle), backoff=0.01, **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def verifier(site: FakeSite, clock: Callable[[], float], **kw: Any) -> AuthVerifier:
    return AuthVerifier(make(site), ttl=10, grace=100, clock=clock, **kw)


def test_verified_once_per_ttl_and_refusals_remembered() -> None:
    site, clock = FakeSite(), Clock()

    async def go() -> None:
        v = verifier(site, clock)
        for _ in range(5):
            await v.check(GOOD, "Shot")
        assert site.calls == ["read"]
        for _ in range(5):
            with pytest.raises(errors.AuthenticationFault):
                await v.check(BAD, "Shot")
        assert site.calls == ["read", "read"]
        clock.t += 11  # past the TTL and the refusal TTL: both asked again
        await v.check(GOOD, "Shot")
        with pytest.raises(errors.AuthenticationFault):
            await v.check(BAD, "Shot")
        assert len(site.calls) == 4
    run(go())


def test_concurrent_checks_share_one_call() -> None:
    site, clock = FakeSite(), Clock()
    site.delay = 0.05

    async def go() -> None:
        v = verifier(site, clock)
        await asyncio.gather(*(v.check(GOOD, "Shot") for _ in range(50)))
        results = await asyncio.gather(*(v.check(BAD, "Shot") for _ in range(50)), return_exceptions=True)
        assert all(isinstance(r, errors.AuthenticationFault) for r in results)
        assert site.calls == ["read", "read"]
    run(go())


def test_grace_period_covers_an_outage_but_not_strangers() -> None:
    site, clock = FakeSite(), Clock()

    async def go() -> None:
        v = verifier(site, clock)
        await v.check(GOOD, "Shot")
        site.fail = 503
        clock.t += 50  # past the TTL, within the grace period
        await v.check(GOOD, "Shot")
        with pytest.raises(UpstreamUnavailable):  # never verified: no data
            await v.check(dict(GOOD, sudo_as_login="someone"), "Shot")
        clock.t += 60  # past the grace period
        with pytest.raises(UpstreamUnavailable):
            await v.check(GOOD, "Shot")
    run(go())


def test_while_the_site_is_down_graced_callers_do_not_wait_for_it() -> None:
    site, clock = FakeSite(), Clock()

    async def go() -> None:
        v = verifier(site, clock)
        await v.check(GOOD, "Shot")
        site.fail = 502
        clock.t += 50
        await v.check(GOOD, "Shot")  # tries the site (3 attempts), falls back to the grace
        n = len(site.calls)
        for _ in range(10):
            await v.check(GOOD, "Shot")
        assert len(site.calls) == n  # the site counts as down: not asked again for a while
    run(go())


@pytest.mark.parametrize("auth", [None, "x", {}, {"script_name": "s"}, {"script_name": "s", "script_key": 5},
                                  {"user_login": "u", "user_password": ""}, {"session_token": ["t"]}])
def test_malformed_credentials_refused_locally(auth: Any) -> None:
    site, clock = FakeSite(), Clock()

    async def go() -> None:
        with pytest.raises(errors.AuthenticationFault):
            await verifier(site, clock).check(auth, "Shot")
    run(go())
    assert site.calls == []


def test_allow_lists() -> None:
    site, clock = FakeSite(), Clock()

    async def go() -> None:
        v = verifier(site, clock, allow_scripts=("s",), allow_logins=("alice",))
        await v.check(GOOD, "Shot")
        for auth in ({"script_name": "other", "script_key": "right-key"},
                     {"user_login": "bob", "user_password": "pw"},
                     {"session_token": "abc"}):  # a token names nobody the list could admit
            with pytest.raises(errors.AuthenticationFault):
                await v.check(auth, "Shot")
    run(go())
    assert site.calls == ["read"]


def test_verdicts_are_bounded_and_keyed_by_salted_hash() -> None:
    site, clock = FakeSite(), Clock()

    async def go() -> None:
        v = verifier(site, clock, max_verdicts=10)
        for i in range(50):
            with pytest.raises(errors.AuthenticationFault):
                await v.check({"script_name": "s", "script_key": f"k{i}"}, "Shot")
        assert len(v._verdicts) == 10
        assert all(len(key) == 64 and set(key) <= set("0123456789abcdef") for key in v._verdicts)
        other = verifier(site, clock)
        assert other._key(GOOD) != v._key(GOOD)  # a salt per process
    run(go())


@pytest.mark.parametrize("method, attempts", [("read", 3), ("summarize", 3), ("create", 1), ("update", 1),
                                              ("delete", 1), ("batch", 1), ("unknown_method", 1)])
@pytest.mark.parametrize("fail", [502, 503, 504, "drop"])
def test_only_safe_methods_are_retried(method: str, attempts: int, fail: Any) -> None:
    site = FakeSite()
    site.fail = fail

    async def go() -> None:
        up = make(site)
        with pytest.raises(UpstreamUnavailable) as e:
            await up.call(method, {"type": "Shot"}, auth=GOOD)
        if attempts == 1:
            assert "may or may not have been applied" in e.value.message
        await up.aclose()
    run(go())
    assert site.calls == [method] * attempts


def test_the_whole_call_keeps_to_the_timeout() -> None:
    site = FakeSite()
    site.fail = "hang"

    async def go() -> float:
        up = make(site, timeout=0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(UpstreamUnavailable):
            await up.call("read", {"type": "Shot"}, auth=GOOD)
        took = loop.time() - t0
        assert up.site_down
        await up.aclose()
        return took
    assert run(go()) < 0.6


def test_site_answers_are_freed_without_the_cycle_collector() -> None:
    """A full scan reads gigabytes through the client: each answer must go when its caller
    is done with it, not wait in a reference cycle (httpx leaves one in every response)."""
    import gc
    site = FakeSite()

    async def go() -> list[object]:
        up = make(site)
        for _ in range(3):  # warm: the client's pool, its connection
            await up.call("read", {"type": "Shot"}, auth=GOOD)
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                assert (await up.call("read", {"type": "Shot"}, auth=GOOD))["entities"] == []
                await (await up.post_json(b'{"method_name":"info","params":[]}', "info")).aclose()
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            return [o for o in gc.garbage if isinstance(o, httpx.Response)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
            await up.aclose()
    assert run(go()) == []


def test_unknown_method_names_do_not_grow_counters() -> None:
    site = FakeSite()

    async def go() -> Upstream:
        up = make(site)
        for i in range(100):
            await up.post_json(b'{"method_name":"m%d","params":[]}' % i, f"m{i}")
        await up.aclose()
        return up
    assert run(go()).calls == {"other": 100}


@pytest.mark.parametrize("line, secret", [
    ('auth {"script_key": "abc123", "script_name": "x"}', "abc123"),
    ("{'user_password': 'hunter2', 'user_login': 'bob'}", "hunter2"),
    ('{"msg": "auth {\\"session_token\\": \\"tok-9\\"}"}', "tok-9"),
    ("session_token=deadbeef&x=1", "deadbeef"),
    ("Cookie: _session_id=abc987; path=/", "abc987"),
    ("postgresql+psycopg://sg:pa55word@db/sg", "pa55word"),
    ("user_password: hunter2", "hunter2"),
    ("SCRIPT_KEY=s3cr3t", "s3cr3t"),
    ("user_pa\u017fsword=hunter3", "hunter3"),  # long s: the regex ignores case the Unicode way
    ("api_\u212aey=zz-top", "zz-top"),  # Kelvin sign K
    ("sess\u0130on_id=dotted-9", "dotted-9"),  # capital I with dot
])
def test_scrubber_masks_secrets(line: str, secret: str) -> None:
    assert secret not in scrub(line)


@pytest.mark.parametrize("json_logs", [False, True])
def test_configured_logs_scrub_messages_and_tracebacks(json_logs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure(json_logs=json_logs, level=logging.DEBUG)
    try:
        log = logging.getLogger("sgcache.test")
        log.debug("auth %s", {"script_name": "s", "script_key": "sekrit-1"})
        try:
            raise ValueError("bad user_password='sekrit-2'")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    out = stream.getvalue()
    assert "sekrit" not in out and "failed" in out and "'script_name': 's'" in out.replace('\\"', "'")


def test_reads_at_different_addresses_never_share_a_coalescing_key() -> None:
    """Answers carry URLs made from the address the caller used (`request.base_url`): the
    cheap stand-in for it in the read-coalescing key must tell apart whatever it does."""
    from itertools import combinations

    from starlette.requests import Request

    from sgcache.serve.app import _base_of

    def scope(scheme: str = "http", host: bytes | None = b"cache:8000", server: Any = ("10.0.0.5", 8000),
              root_path: str = "") -> dict[str, Any]:
        headers = [(b"host", host)] if host is not None else []
        return {"type": "http", "scheme": scheme, "server": server, "root_path": root_path, "path": "/api3/json",
                "query_string": b"", "headers": [(b"content-type", b"application/json"), *headers]}
    scopes = [scope(), scope(scheme="https"), scope(host=b"sgcache.studio:8000"), scope(host=None),
              scope(host=None, server=("10.0.0.6", 8000)), scope(root_path="/cache"), scope(server=("10.0.0.6", 9000))]
    for a, b in combinations(scopes, 2):
        if str(Request(a).base_url) != str(Request(b).base_url):
            assert _base_of(a) != _base_of(b), (a, b)
    assert _base_of(scope()) == _base_of(scope())
