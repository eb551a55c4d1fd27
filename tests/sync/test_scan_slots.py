"""A full scan's site requests stay within SGCACHE_SCAN_CONCURRENCY, planning included.

The scan plans types (two `summarize` calls each) while it already reads the pages of
the types planned: against a hosted site the summaries of a few dozen types take
seconds. Summaries and page reads hold the same slots, so the bound the studio set is
the bound the site sees, whatever is being planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from sgcache.mock.builtin_schema import build_schema
from sgcache.protocol import jsoncodec
from sgcache.store.tables import Store, make_engine
from sgcache.sync.scan import full_scan
from sgcache.upstream import Upstream


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    s = Store(engine, build_schema())
    s.create()
    yield s
    engine.dispose()


class SlowSite:
    """Rows 1..n of each type (active), answering after `delay`; counts requests in flight."""

    def __init__(self, sizes: dict[str, int], delay: float, slow_summaries: dict[str, float] | None = None) -> None:
        self.sizes, self.delay = sizes, delay
        self.slow_summaries = slow_summaries or {}  # type -> its summaries' delay
        self.in_flight = self.peak = 0
        self.log: list[tuple[float, str, str]] = []  # (start, method, type)
        self.ends: list[tuple[float, str]] = []  # (end, method)

    async def call(self, method: str, params: Any = None, *, slot: Any = None) -> Any:
        """As `Upstream.call`: `slot` is held while the request is with the site."""
        async with slot if slot is not None else contextlib.nullcontext():
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.log.append((time.monotonic(), method, (params or {}).get("type", "")))
            try:
                etype = (params or {}).get("type", "")
                await asyncio.sleep(self.slow_summaries.get(etype, self.delay) if method == "summarize" else self.delay)
            finally:
                self.in_flight -= 1
                self.ends.append((time.monotonic(), method))
        return self._answer(method, params)

    def _answer(self, method: str, params: Any) -> Any:
        if method == "info":
            return {"version": [8, 0, 0], "api_max_entities_per_page": 10}
        n = self.sizes.get(params["type"], 0)
        if method == "summarize":
            kind = params["summaries"][0]["type"]
            return {"summaries": {"id": n if kind == "record_count" else (n or None)}}
        assert method == "read"
        if params["return_only"] != "active":
            return {"entities": []}
        lo, hi = 0, n
        for c in params["filters"]["conditions"]:
            if c["relation"] == "greater_than":
                lo = c["values"][0]
            elif c["relation"] == "less_than":
                hi = min(hi, c["values"][0] - 1)
        ids = range(lo + 1, hi + 1)[:params["paging"]["entities_per_page"]]
        return {"entities": [{"type": params["type"], "id": i, "code": f"{params['type']}-{i}"} for i in ids]}


def test_requests_in_flight_never_exceed_the_concurrency_and_fetching_starts_while_planning(store: Store) -> None:
    sizes = {"Shot": 400, "Asset": 200, "Sequence": 30, "Project": 5, "Task": 0}
    # Task's summaries are slow (a big type on a hosted site): the others' pages must not wait for them.
    site = SlowSite(sizes, delay=0.01, slow_summaries={"Task": 0.3})
    res = asyncio.run(full_scan(site, store, list(sizes), concurrency=3))  # type: ignore[arg-type]
    assert site.peak == 3  # the bound, reached
    assert res.rows == sizes
    with store.engine.connect() as conn:
        for etype, n in sizes.items():
            assert conn.execute(select(func.count()).select_from(store[etype].table)).scalar() == n
    first_read = min(t for t, m, _ in site.log if m == "read")
    planned = max(t for t, m in site.ends if m == "summarize")
    assert first_read < planned  # pages of planned types were read while Task was being planned
    reads_while_planning = [t for t, m, _ in site.log if m == "read" and t < planned]
    assert len(reads_while_planning) >= 10


def test_the_site_client_holds_a_slot_only_while_the_request_is_with_the_site(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot bounds site requests: the answer is decoded after it is released, so the
    scan's next request is not kept waiting behind a page being decoded."""
    slot = asyncio.Semaphore(1)
    seen: dict[str, bool] = {}

    def site(request: httpx.Request) -> httpx.Response:
        seen["with the site"] = slot.locked()
        return httpx.Response(200, json={"results": {"entities": [{"type": "Shot", "id": 1}]}})

    real_loads = jsoncodec.loads

    def loads(body: bytes, **kw: Any) -> Any:
        seen["decoding"] = slot.locked()
        return real_loads(body, **kw)
    monkeypatch.setattr(jsoncodec, "loads", loads)

    async def go() -> Any:
        up = Upstream("http://site", transport=httpx.MockTransport(site))
        try:
            return await up.call("read", {"type": "Shot"}, slot=slot)
        finally:
            await up.aclose()
    assert asyncio.run(go()) == {"entities": [{"type": "Shot", "id": 1}]}
    assert seen == {"with the site": True, "decoding": False}
    assert not slot.locked()


def test_a_request_waiting_on_the_slot_is_sent_before_the_freed_answer_is_decoded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding a page holds the event loop for milliseconds: the request that took the
    freed slot must already be on its way by then, or a slot sits idle for that long after
    every answer (at `--latency 0.15` all four were busy 78% of the time before, 96% after)."""
    slot = asyncio.Semaphore(1)
    order: list[str] = []

    def site(request: httpx.Request) -> httpx.Response:
        etype = jsoncodec.loads(request.content)["params"][1]["type"]
        order.append(f"sent {etype}")
        return httpx.Response(200, json={"results": {"entities": [{"type": etype, "id": 1}]}})

    real_loads = jsoncodec.loads

    def loads(body: bytes, **kw: Any) -> Any:
        got = real_loads(body, **kw)
        if isinstance(got, dict) and "results" in got:
            order.append(f"decoded {got['results']['entities'][0]['type']}")
        return got
    monkeypatch.setattr(jsoncodec, "loads", loads)

    async def go() -> None:
        up = Upstream("http://site", transport=httpx.MockTransport(site))
        try:
            await asyncio.gather(*(up.call("read", {"type": t}, slot=slot) for t in ("Shot", "Asset")))
        finally:
            await up.aclose()
    asyncio.run(go())
    assert order == ["sent Shot", "sent Asset", "decoded Shot", "decoded Asset"]
