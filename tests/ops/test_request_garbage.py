"""A request leaves no reference cycles behind.

Objects in a cycle are freed only by the cycle collector, and when every request leaves
some, a full collection of them stops the event loop: before `ed51fa8` each api3 request
left ~45 (its Response, its background task, the closure between them, the Request ...),
a gen-2 pass over ~35,000 of them every second under load, 20+ ms each, which every other
caller waited out (issue 11's hostile benchmark); a passed-through read left its handled
`Passthrough` with its traceback (~10 objects). The cache runs in-process here, the
collector off while reads are answered, then one collection says what was left.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from ..e2e.harness import Site
from ..support.app_in_process import Cache, by_id
from .conftest import prime

READS = 200


def _ours(obj: object) -> bool:
    """The server's objects (the test's own HTTP client, httpx, has cycles of its own)."""
    t = type(obj)
    if t.__name__ in ("function", "coroutine") and hasattr(obj, "__module__"):
        return str(getattr(obj, "__module__", "")).startswith(("sgcache", "starlette"))
    return t.__module__.startswith(("sgcache", "starlette", "uvicorn"))


@pytest.fixture(scope="module")
def env(site: Site, db_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return prime(site, db_url, tmp_path_factory.mktemp("data"))


def test_answered_and_passed_through_reads_leave_no_cyclic_garbage(site: Site, env: dict[str, str]) -> None:
    shot = site.sg().find_one("Shot", [], ["id"])["id"]

    async def go() -> list[object]:
        async with Cache(site, env, shadow_rate=0.0) as c:
            for _ in range(20):  # warm: plans, statements, connections, auth verdicts
                await c.call("read", by_id(shot, ["code"]))
            served = await c.served()
            gc.collect()
            gc.disable()
            try:
                for k in range(READS):
                    await c.call("read", by_id(shot, ["code", "sg_status_list"]))
                    if k % 10 == 0:  # and some the cache passes to the site
                        await c.call("read", by_id(shot, ["code", "created_by.HumanUser." * 8 + "name"]))
                gc.set_debug(gc.DEBUG_SAVEALL)  # keep what it finds, to say whose it is
                gc.collect()
                left = [o for o in gc.garbage if _ours(o)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            assert await c.served() >= served + READS  # answered locally, not passed through
            return left

    left = asyncio.run(go())
    kinds = sorted({type(o).__qualname__ for o in left})
    # Fewer than one per passed-through read (20 of them): a leftover of an earlier test in
    # this process (an engine it opened) may be freed meanwhile, but no request leaves any.
    assert len(left) < READS // 10, f"{len(left)} of the server's objects in reference cycles after {READS} reads: {kinds}"
