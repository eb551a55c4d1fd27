"""Callers' traffic passed on to the site, within limits a caller cannot stretch.

A transfer holds one connection of the upstream ``transfer`` lane (an api3 call one of
the ``passthrough`` lane) for as long as it lasts, and an upload lasts as long as its
caller takes to send the body. So:

- a transfer (upload or download) must move at least `min_rate` bytes a second on
  average after a first `timeout` seconds (`Pace`, the rule of Apache's mod_reqtimeout
  ``MinRate``): a body trickled a byte at a time is cut off, a large file is not;
- one client address may have at most `limit` transfers in flight (`ClientSlots`; the
  address is uvicorn's: behind a proxy, the one in X-Forwarded-For if the proxy is
  trusted through FORWARDED_ALLOW_IPS);
- the site's headers go back to the one caller they answer, every ``Set-Cookie`` kept
  separate (`site_headers`); the upstream client itself keeps no cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Callable

import httpx
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("sgcache.http")

#: Headers that belong to one hop, never passed on (in either direction).
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "proxy-authenticate", "host", "content-length"})


def site_headers(resp: httpx.Response, *, decoded: bool) -> list[tuple[bytes, bytes]]:
    """The site's response headers for the caller, repeated ones (Set-Cookie) kept apart.

    `decoded`: the body is passed on decoded, so its content-encoding no longer applies.
    """
    drop = HOP_HEADERS | ({"content-encoding"} if decoded else set())
    return [(k, v) for k, v in resp.headers.raw if k.decode("latin-1").lower() not in drop]


def client_key(request: Request) -> str:
    """Who a transfer counts against: the client address (uvicorn resolves trusted proxies)."""
    return request.client.host if request.client else "?"


class ClientSlots:
    """Transfers in flight per client address, at most `limit` each (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def take(self, who: str) -> bool:
        n = self._held.get(who, 0)
        if self.limit and n >= self.limit:
            return False
        self._held[who] = n + 1
        return True

    def give(self, who: str) -> None:
        n = self._held.get(who, 0) - 1
        if n > 0:
            self._held[who] = n
        else:
            self._held.pop(who, None)

    def busy_message(self) -> str:
        return (f"Too many uploads or downloads from your address are in progress at once "
                f"(the limit is {self.limit}). Try again when one has finished.")


class Pace:
    """A deadline that moves out as data moves: `timeout` s, plus 1 s per `min_rate` bytes.

    Every `bound()` block running now is rescheduled to the new deadline as bytes pass
    through `count()`, so both a slow body and a slow reader of the answer are cut off.
    """

    def __init__(self, timeout: float, min_rate: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.start = self._loop.time()
        self.timeout = timeout
        self.min_rate = max(1, min_rate)
        self.moved = 0
        self._scopes: list[asyncio.Timeout] = []

    @property
    def deadline(self) -> float:
        return self.start + self.timeout + self.moved / self.min_rate

    @contextlib.asynccontextmanager
    async def bound(self) -> AsyncIterator[None]:
        """Raise TimeoutError if the block outlives the deadline (which moves with the data)."""
        async with asyncio.timeout_at(self.deadline) as scope:
            self._scopes.append(scope)
            try:
                yield
            finally:
                self._scopes.remove(scope)

    async def count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass `chunks` on, moving the deadline out by their size."""
        async for chunk in chunks:
            self.moved += len(chunk)
            for scope in self._scopes:
                scope.reschedule(self.deadline)
            yield chunk


class RelayResponse(StreamingResponse):
    """The site's streamed answer, sent on within the transfer's `Pace`.

    `done` runs once the answer is sent, cut off or abandoned: it closes the upstream
    response (its connection goes back to the lane) and frees the caller's slot.
    """

    def __init__(self, resp: httpx.Response, pace: Pace, done: Callable[[], None]) -> None:
        super().__init__(pace.count(resp.aiter_raw()), status_code=resp.status_code)
        self.raw_headers = site_headers(resp, decoded=False)
        self._resp = resp
        self._pace = pace
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with self._pace.bound():
                await super().__call__(scope, receive, send)
        except TimeoutError:
            # Headers are out: all that is left is to drop the connection (the server does
            # when an app returns with the answer unfinished).
            log.info("transfer too slow (%d bytes in %.0fs); cut off", self._pace.moved,
                     self._pace.timeout)
        finally:
            try:
                await self._resp.aclose()
            finally:
                self._done()

