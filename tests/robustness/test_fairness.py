"""One caller's flood cannot take another caller's share of the server (issue 11, the
resource benchmark), against real `sgcache serve` processes and the mock site.

Callers are told apart by address and credentials (here both on 127.0.0.1: the site's
script and a second script). The site is made slow with the mock's latency fault, so the
order in which calls reach it and answers come back shows who waited for whom, with no
clock in the assertions:

- a caller's passthrough calls, and new keys being checked, wait for the site without
  holding a turn of the server: another caller's read by id is answered meanwhile;
- one caller has at most `SGCACHE_CALLER_PASSTHROUGH` calls at the site: its others wait
  in its own queue, and another caller's passthrough call goes past them to the site;
- a large body with a key the site refused, sent again from the same address, is refused
  from its head: no second verification, and the connection is closed unread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import httpx
import pytest

from sgcache.serve.fairness import RoundRobin

from ..e2e.harness import Cache, Site
from .conftest import OTHER_SCRIPT
from .requests_ import cond
from .servers import Primed, serve

#: Through more links than the cache plans (6): always passed through to the site.
DEEP = ".".join(["created_by.HumanUser"] * 8) + ".name"
LATENCY = 6.0


def auth(script: tuple[str, str]) -> dict[str, str]:
    return {"script_name": script[0], "script_key": script[1]}


def call(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url + "/api3/json", json=body, timeout=60)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def deep_read(script: tuple[str, str], shot: int) -> dict[str, Any]:
    """A passthrough read (a distinct one per `shot`, so none is shared with another)."""
    return {"method_name": "read", "params": [auth(script), cond("id", "is", shot, return_fields=["code", DEEP])]}


def by_id(script: tuple[str, str], shot: int) -> dict[str, Any]:
    return {"method_name": "read", "params": [auth(script), cond("id", "is", shot, return_fields=["code"])]}


def site_requests(site: Site) -> int:
    return int(site.stats()["total"])


def wait_until(what: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def set_latency(site: Site, seconds: float) -> None:
    httpx.post(site.admin_url + "/faults", json={"latency": seconds} if seconds else {"reset": True},
               timeout=5).raise_for_status()


@pytest.fixture
def slow_site(site: Site) -> Iterator[Site]:
    yield site
    set_latency(site, 0)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    ex = ThreadPoolExecutor(16)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


def _fair_cache(primed: Primed, **settings: Any) -> Cache:
    c = serve(primed, "--no-sync", shadow_rate=0, **settings)
    farm, other = auth((primed.site.script_name, primed.site.script_key)), auth(OTHER_SCRIPT)
    for who in (farm, other):  # both callers verified before the site is slowed
        got = call(c.url, {"method_name": "read", "params": [who, cond("id", "is", 1)]})
        assert "results" in got, got
    return c


def test_a_callers_passthrough_does_not_hold_up_another_callers_read_by_id(
        primed_any: Primed, slow_site: Site, pool: ThreadPoolExecutor) -> None:
    site = slow_site
    cache = _fair_cache(primed_any, serve_active=2, caller_active=2, caller_passthrough=16)
    farm = (site.script_name, site.script_key)
    try:
        shot = site.sg().find_one("Shot", [], ["code"], order=[{"field_name": "id", "direction": "asc"}])
        site.reset_stats()
        set_latency(site, LATENCY)
        flood: list[Future[dict[str, Any]]] = [pool.submit(call, cache.url, deep_read(OTHER_SCRIPT, i))
                                               for i in range(1, 7)]
        wait_until(lambda: site_requests(site) >= 6)  # all six are at the site, waiting
        got = call(cache.url, by_id(farm, shot["id"]))
        # Answered from the cache while the other caller's calls still wait for the site:
        # more of them than the server has turns (2), so they hold none.
        assert not any(f.done() for f in flood)
        assert got["results"]["entities"] == [{"type": "Shot", "id": shot["id"], "code": shot["code"]}]
        assert site_requests(site) == 6
    finally:
        cache.stop()


def test_new_keys_waiting_for_the_site_do_not_hold_up_a_verified_callers_read(
        primed_any: Primed, slow_site: Site, pool: ThreadPoolExecutor) -> None:
    site = slow_site
    cache = _fair_cache(primed_any, serve_active=2, caller_active=1)
    farm = (site.script_name, site.script_key)
    try:
        site.reset_stats()
        set_latency(site, LATENCY)
        strangers = [pool.submit(call, cache.url, by_id((f"stranger{i}", f"key-{i}"), 1)) for i in range(4)]
        wait_until(lambda: site_requests(site) >= 4)  # four new keys, each being checked by the site
        got = call(cache.url, by_id(farm, 1))
        assert not any(f.done() for f in strangers)  # they hold none of the two turns meanwhile
        assert got["results"]["entities"][0]["id"] == 1
        assert all(f.result(60)["error_code"] == 102 for f in strangers)
    finally:
        cache.stop()


def test_a_callers_excess_passthrough_waits_in_its_own_queue(
        primed: Primed, slow_site: Site, pool: ThreadPoolExecutor) -> None:
    site = slow_site
    cache = _fair_cache(primed, caller_passthrough=2)
    farm = (site.script_name, site.script_key)
    try:
        site.reset_stats()
        set_latency(site, LATENCY)
        flood = [pool.submit(call, cache.url, deep_read(OTHER_SCRIPT, i)) for i in range(1, 7)]
        wait_until(lambda: site_requests(site) >= 2)
        mine = pool.submit(call, cache.url, deep_read(farm, 1))
        wait_until(lambda: site_requests(site) >= 3)
        # The other caller has its two places at the site and four calls queued behind
        # them; the farm's call went past those four.
        assert site_requests(site) == 3
        assert not mine.done() and not any(f.done() for f in flood)
        set_latency(site, 0)
        assert "results" in mine.result(60)
        assert all("results" in f.result(60) for f in flood)
        assert site_requests(site) == 7
    finally:
        cache.stop()


def _send(url: str, body: bytes) -> tuple[bytes, bytes]:
    """POST `body` on a fresh connection; (response head, body) or (b"", b"") if reset."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=60)
    try:
        s.sendall(b"POST /api3/json HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (host.encode(), len(body)) + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return b"", b""
    finally:
        s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return head.lower(), payload


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_resent_large_body_with_a_refused_key_is_refused_from_its_head(primed: Primed, site: Site) -> None:
    cache = serve(primed, "--no-sync", refused_body_delay=0)
    bad = {"script_name": OTHER_SCRIPT[0], "script_key": "not-the-key"}
    body = json.dumps({"method_name": "batch", "params": [bad, [{"request_type": "create"}] * 20_000]}).encode()
    assert len(body) > 300_000  # past the unverified limit (64 KiB)
    try:
        site.reset_stats()
        head, payload = _send(cache.url, body)
        assert head.startswith(b"http/1.1 200"), head
        assert json.loads(payload)["error_code"] == 102
        assert b"connection: close" not in head  # the first refusal: drained, the client reads it
        assert site.stats()["requests"] == {"read": 1}  # one verification
        for _ in range(3):
            head, payload = _send(cache.url, body)
            # Refused again at once: the Fault and the connection closed, or (when the
            # close overtakes the client's sending) a reset; never the body read.
            if head:
                assert b"connection: close" in head, head
                assert json.loads(payload)["error_code"] == 102
        assert site.stats()["requests"] == {"read": 1}  # and no second verification
    finally:
        cache.stop()


def test_free_turns_go_round_the_waiting_callers() -> None:
    """With one turn, a caller that queued one request behind another's ten is served
    second, not eleventh; and one caller never holds more than its share."""
    async def run() -> list[str]:
        rr = RoundRobin(limit=1, per_caller=1, max_wait=10, what="turn")
        order: list[str] = []

        async def one(caller: str) -> None:
            await rr.acquire(caller)
            order.append(caller)
            await asyncio.sleep(0)
            rr.release(caller)

        await rr.acquire("flood")  # the flood holds the only turn ...
        jobs = [asyncio.ensure_future(one("flood")) for _ in range(10)]
        await asyncio.sleep(0)
        jobs.append(asyncio.ensure_future(one("farm")))  # ... and queued ten more first
        await asyncio.sleep(0)
        rr.release("flood")
        await asyncio.gather(*jobs)
        assert rr.active == 0 and not rr.queues
        return order

    order = asyncio.run(run())
    assert order.index("farm") <= 1, order


def test_a_caller_alone_may_use_every_turn_but_only_its_share_beside_another() -> None:
    """One client's many connections on an idle server are not held to one turn; as soon
    as another caller is served, the flood is back to its share (one turn at a time), so
    the newcomer waits for one of the flood's requests, not for all of them."""
    async def run() -> None:
        rr = RoundRobin(limit=4, per_caller=1, max_wait=10, what="turn", alone_window=60)
        for _ in range(4):  # alone: every turn, no waiting
            await asyncio.wait_for(rr.acquire("farm"), 1)
        assert rr.active == 4 and rr.waited == 0
        late = asyncio.ensure_future(rr.acquire("artist"))  # another caller: waits for a free turn ...
        await asyncio.sleep(0)
        assert not late.done()
        rr.release("farm")  # ... which goes to it, not back to the farm
        await asyncio.wait_for(late, 1)
        more = asyncio.ensure_future(rr.acquire("farm"))
        for _ in range(2):  # the farm holds three turns, past its share while the artist is served:
            rr.release("farm")  # a free turn is not its until it is down to none
            await asyncio.sleep(0)
        assert not more.done() and rr.active == 2 and rr.queues["farm"].active == 1
        rr.release("farm")
        await asyncio.wait_for(more, 1)  # its one turn beside the artist's
        assert rr.queues["farm"].active == 1 and rr.queues["artist"].active == 1

    asyncio.run(run())
