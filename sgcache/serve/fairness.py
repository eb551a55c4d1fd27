"""Fair shares of the server between callers, so one caller's flood cannot delay another's reads.

The server is one event loop: every request in progress gets a turn of it in the order
it became ready, so a caller with 75 requests in progress gets 75 turns for each one of
a caller with one, and its flood of cheap valid reads (or of passthrough calls) becomes
everyone's latency. Connection, body and pool limits do not see this: the requests are
small, well formed and verified. So, after a request is parsed and before it is worked
on, it waits for a *turn*:

- a caller is its address plus its credentials (`caller_key`: the script or login and a
  salted hash of its secret; sudo and client uuids left out, so they cannot mint new
  callers); a request with no credentials is its address's anonymous caller;
- at most `active` requests of all callers are worked on at once, at most
  `per_caller_active` of one caller while other callers are being served (a caller
  alone may use all `active`); the rest wait in their own caller's FIFO queue, which
  costs a future each, and free turns go round the waiting callers in turn
  (round-robin), so a caller with one waiting request is served after at most one
  request of each other caller;
- a turn covers everything the server does for the request, its answer sent and counted
  included (serve/app.py gives it back then): the work outside turns is what a flood
  gets for free, so there must be none;
- a request gives its turn back while it waits: for the site (the verification of new
  credentials, so many new keys cannot hold every turn while the site checks them; a
  passthrough call, which holds one of its caller's `per_caller_passthrough` places
  instead, so a caller flooding passthrough queues behind itself and cannot take every
  connection of the passthrough lane) or for an identical read's answer; a read then
  takes a turn again to answer, so answers that arrive together are still served one
  turn at a time;
- a request that waited `max_wait` seconds for a turn or a place gets a Busy Fault.

Single event loop, no locks: `_grant` and `_release` never await.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Mapping, TypeVar

from ..protocol import errors

#: Credential fields that identify a caller (their values; the secret only hashed).
_WHO = ("script_name", "user_login", "session_token")
_SECRET = ("script_key", "user_password", "session_token")
T = TypeVar("T")
#: A caller granted turns with nobody else for this long counts as alone (`RoundRobin`).
ALONE_WINDOW = 0.25


class Busy(errors.Fault):
    """A caller's request waited its limit for a turn; the caller should retry soon."""

    code = errors.UPSTREAM_UNAVAILABLE


@dataclass
class _Queue:
    """One caller's requests: how many are being worked on, and the ones waiting (FIFO)."""

    active: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class RoundRobin:
    """`limit` places shared between callers, at most `per_caller` each, free places going
    round the waiting callers in turn.

    With `alone_window` > 0, `per_caller` binds only under contention: a caller that no
    other caller has been granted a place beside for `alone_window` seconds may use up to
    `limit` (one client's many connections on an idle server), and drops back to
    `per_caller` as soon as anyone else comes. Why: on one event loop, each request being
    worked on adds to every other request's wait, so a caller's share of the loop follows
    its count of places; one place each under contention is what keeps a flood's share
    equal to anyone else's."""

    def __init__(self, limit: int, per_caller: int, max_wait: float, what: str,
                 alone_window: float = 0.0) -> None:
        self.limit = max(1, limit)
        self.per_caller = max(1, min(per_caller, self.limit)) if per_caller > 0 else self.limit
        self.max_wait = max_wait
        self.what = what
        #: Whether `per_caller` depends on contention (else it always binds, nothing is tracked).
        self._adaptive = alone_window > 0 and self.per_caller < self.limit
        self.alone_window = alone_window
        self.active = 0
        self.queues: dict[str, _Queue] = {}
        self._ring: deque[str] = deque()  # callers with waiters, each once, served in this order
        self._recent: OrderedDict[str, float] = OrderedDict()  # caller -> when last granted, oldest first
        self.waited = 0  # requests that had to wait, for tests and status
        self.refused = 0

    def _cap(self, caller: str) -> int:
        """How many places `caller` may hold now (`per_caller` unless it is alone)."""
        if not self._adaptive:
            return self.per_caller
        recent = self._recent
        horizon = time.monotonic() - self.alone_window
        while recent and next(iter(recent.values())) < horizon:
            recent.popitem(last=False)
        others_recent = len(recent) - (caller in recent)
        ring = self._ring  # each waiting caller once: another is waiting unless it is just this one
        others_waiting = len(ring) > 1 or (len(ring) == 1 and ring[0] != caller)
        return self.per_caller if others_recent or others_waiting else self.limit

    def _granted(self, caller: str) -> None:
        if self._adaptive:
            self._recent[caller] = time.monotonic()
            self._recent.move_to_end(caller)

    def _queue(self, caller: str) -> _Queue:
        q = self.queues.get(caller)
        if q is None:
            q = self.queues[caller] = _Queue()
        return q

    async def acquire(self, caller: str) -> None:
        q = self._queue(caller)
        if self.active < self.limit and not q.waiting and not self._ring and q.active < self._cap(caller):
            self.active += 1
            q.active += 1
            self._granted(caller)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q.waiting.append(fut)
        if caller not in self._ring:
            self._ring.append(caller)
        self.waited += 1
        self._grant()
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.max_wait)
        except BaseException as e:
            if fut.done() and not fut.cancelled():  # granted just as we gave up: hand it on
                self.release(caller)
            else:
                fut.cancel()
                self._drop(caller, q)
            if isinstance(e, TimeoutError):
                self.refused += 1
                raise Busy(f"sgcache is busy: this caller's requests waited {self.max_wait:g}s for a "
                           f"{self.what}. Try again shortly.") from None
            raise

    def release(self, caller: str) -> None:
        q = self.queues.get(caller)
        if q is None:
            return
        self.active = max(0, self.active - 1)
        q.active = max(0, q.active - 1)
        self._grant()
        self._forget(caller, q)

    def _grant(self) -> None:
        """Give free places to waiting callers, one each per pass round the ring."""
        skipped = 0
        while self.active < self.limit and self._ring and skipped < len(self._ring):
            caller = self._ring.popleft()
            q = self.queues[caller]
            while q.waiting and q.waiting[0].done():  # gave up while waiting
                q.waiting.popleft()
            if not q.waiting:
                self._forget(caller, q)
                continue
            if q.active >= self._cap(caller):  # at its own limit: keep its place for later
                self._ring.append(caller)
                skipped += 1
                continue
            skipped = 0
            q.waiting.popleft().set_result(None)
            self.active += 1
            q.active += 1
            self._granted(caller)
            if q.waiting:
                self._ring.append(caller)

    def _drop(self, caller: str, q: _Queue) -> None:
        with_waiters = [f for f in q.waiting if not f.done()]
        q.waiting = deque(with_waiters)
        if not q.waiting and caller in self._ring:
            self._ring.remove(caller)
        self._forget(caller, q)

    def _forget(self, caller: str, q: _Queue) -> None:
        if not q.active and not q.waiting and caller not in self._ring:
            self.queues.pop(caller, None)


class Turn:
    """One request's turn: held from `Fairness.turn` until released (at most once)."""

    def __init__(self, fairness: "Fairness", caller: str) -> None:
        self.fairness = fairness
        self.caller = caller
        self.held = False

    async def take(self) -> None:
        await self.fairness.turns.acquire(self.caller)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.fairness.turns.release(self.caller)

    async def away(self, waiting: Awaitable[T]) -> T:
        """Await `waiting` (the site, say) without the turn, then take a turn again."""
        if not self.held:
            return await waiting
        self.release()
        result = await waiting  # on a Fault the request ends without its turn
        await self.take()
        return result


class Fairness:
    """The turns of the event loop and the callers' places in passthrough (module doc)."""

    def __init__(self, *, active: int, per_caller_active: int, per_caller_passthrough: int,
                 max_wait: float, alone_window: float = ALONE_WINDOW) -> None:
        self._salt = os.urandom(16)
        self.enabled = active > 0
        self.turns = RoundRobin(active or 1, per_caller_active, max_wait, "turn of the server", alone_window)
        self.passthrough = RoundRobin(1 << 30, per_caller_passthrough, max_wait,
                                      "place among its calls to the site")

    def caller_key(self, address: str, auth: Any) -> str:
        """Address plus who the credentials name, with a salted hash of their secret."""
        if not isinstance(auth, Mapping):
            return address
        parts = [str(auth.get(k))[:200] for k in _WHO if isinstance(auth.get(k), str)]
        secret = "\0".join(str(auth.get(k)) for k in _SECRET if isinstance(auth.get(k), str))
        if not parts and not secret:
            return address
        digest = hashlib.blake2b(secret.encode("utf-8", "surrogatepass"), key=self._salt, digest_size=12).hexdigest()
        return f"{address}|{'|'.join(parts)}|{digest}"

    async def turn(self, caller: str) -> Turn:
        t = Turn(self, caller)
        if self.enabled:
            await t.take()
        return t

    async def site_call(self, turn: Turn | None, caller: str, call: Any) -> Any:
        """Await `call()` (a call to the site) without the loop's turn, in one of the caller's
        passthrough places."""
        if turn is not None:
            turn.release()
        if not self.enabled:
            return await call()
        await self.passthrough.acquire(caller)
        try:
            return await call()
        finally:
            self.passthrough.release(caller)
