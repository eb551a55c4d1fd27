"""Coalesced passthrough: identical concurrent reads sent to the site share one call.

A render farm starts thousands of jobs at once, and they make the same calls; what the
cache cannot answer becomes as many identical calls to the site. Here an api3 read the
site would answer identically for each of them is sent once, and every caller gets its
own response built from the one answer's bytes.

When two calls are "identical" (`Coalescer.key`): the same method (only SAFE_METHODS,
which change nothing on the site), the same parameters as sent, the same `user-agent` and
`locale` headers (the only ones passed on), and the same **credentials**: the whole auth
object (script key, password or session token, and `sudo_as_login`) goes into a salted
hash, so only callers who hold the same secret share an answer, never two users of one
permission group (the site could still show them different rows) and never a caller who
knows a login but not its password. The credentials are kept only for the call; the
process keeps hashes.

Read-your-writes: every write (any other method, and any raw non-GET request such as an
upload) records when it returned in a small clock shared by every process on the data
dir (`WriteClock`), under its caller's credential hash and under the person it acts as
(`sudo_as_login`, else the login or script). A read joins only a call that started after
its caller's last write returned, by either key. Writes are never coalesced.

Besides calls in flight, an answer that arrived less than `window` seconds ago is reused
(default 1 s, the cache's freshness target for event-fed rows: a stampede arrives over
seconds, longer than one call lasts). `window=0` shares calls in flight only.

The same class, with `window=0`, shares whole `read`/`summarize` answers (`app.py`,
`shared_read`): a stampede's identical reads wait in one queue for the database threads,
and while one of them is queued or running the others join it instead of queueing too.
That answer is the cache's own (or the site's, passed through) as of a moment the joiner
was already waiting, the same rule as a site call in flight; the write clock is moved
again once a write-through is applied, so a caller's read never joins a run that may have
read the store before its own write landed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Mapping

from ..protocol import jsoncodec
from ..upstream import SAFE_METHODS

log = logging.getLogger("sgcache.coalesce")

#: Auth keys that do not change what the site answers (a per-client-instance uuid).
_NOT_IDENTITY = frozenset({"session_uuid"})
#: Request headers passed on to the site (`Upstream.post_json`): part of the key.
_PASSED_HEADERS = ("user-agent", "locale")
#: Answers larger than this are shared by callers waiting on the call, but not kept after it.
MAX_KEPT_ANSWER = 4 * 1024 * 1024
#: Bytes of answers kept for the reuse window, at most.
MAX_KEPT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """The site's answer to one call: what every caller's own response is made from."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    #: For a whole shared read: how the leader's request was answered, and why it was passed
    #: through (the joiners' request log and metrics say the same).
    outcome: str = "passthrough"
    reason: str | None = None


class WriteClock:
    """When each caller's last write returned, shared by every process serving a data dir.

    A memory-mapped file of `slots` monotonic timestamps (CLOCK_MONOTONIC is system-wide on
    Linux, so workers agree) after a random salt made by the first process; a caller's key
    hashes (with that salt, so every process picks the same slot) to a slot, and a slot
    keeps the latest time written to it. A collision only makes a read more careful (it
    waits for its own call). Slot 0 is everyone's: a write whose caller is unknown (a raw
    upload) moves it.
    """

    HEADER = 32  # the salt, then padding

    def __init__(self, path: Path | None, slots: int = 1 << 16) -> None:
        self.slots = slots
        self._fd: int | None = None
        size = self.HEADER + slots * 8
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
                self._map: mmap.mmap | bytearray = mmap.mmap(fd, size)
                self._fd = fd
            except OSError as e:  # a read-only data dir: this process alone
                log.warning("write clock %s unavailable (%s); read-your-writes is per process", path, e)
        if self._fd is None:
            self._map = bytearray(size)
        with self._locked():
            if not any(self._map[:16]):
                self._map[:16] = os.urandom(16)
            now = time.monotonic()
            if any(t > now for (t,) in struct.iter_unpack("<d", self._map[self.HEADER:])):
                self._map[self.HEADER:] = bytes(slots * 8)  # written before a reboot: meaningless now
        self._salt = bytes(self._map[:16])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def slot(self, material: bytes) -> int:
        """The slot of a caller key (the same in every process on this file)."""
        digest = hashlib.sha256(self._salt + material).digest()
        return 1 + int.from_bytes(digest[:8], "little") % (self.slots - 1)

    def get(self, slot: int) -> float:
        return struct.unpack_from("<d", self._map, self.HEADER + slot * 8)[0]

    def mark(self, slots: list[int], at: float) -> None:
        """Move these slots to `at` (never back), under a file lock so processes don't race."""
        with self._locked():
            for s in slots:
                if self.get(s) < at:
                    struct.pack_into("<d", self._map, self.HEADER + s * 8, at)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Flight:
    __slots__ = ("started", "task", "answered_at", "size")

    def __init__(self, started: float, task: asyncio.Future[Answer]) -> None:
        self.started = started
        self.task = task
        self.answered_at: float | None = None
        self.size = 0


class Coalescer:
    """Shares one site call between identical concurrent reads (see the module docstring)."""

    def __init__(self, clock: WriteClock, *, enabled: bool = True, window: float = 1.0,
                 on_shared: Callable[[str, str], None] | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.enabled = enabled
        self.window = max(0.0, window)
        self.on_shared = on_shared
        self._now = now
        self._salt = os.urandom(16)
        self._flights: dict[bytes, _Flight] = {}
        self._kept: OrderedDict[bytes, _Flight] = OrderedDict()  # answered, within the window
        self._kept_bytes = 0
        self.calls = 0  # calls this process sent to the site through here (tests, status)
        self.shared = 0

    # -- identity ----------------------------------------------------------------------
    def _hash(self, *parts: bytes) -> bytes:
        h = hashlib.sha256(self._salt)
        for p in parts:
            h.update(len(p).to_bytes(8, "little"))
            h.update(p)
        return h.digest()

    def _caller_slots(self, auth: Mapping[str, Any]) -> list[int]:
        """The write-clock slots of a caller: their credentials, and the person they act as."""
        material = repr(sorted((k, v) for k, v in auth.items() if k not in _NOT_IDENTITY))
        slots = [self.clock.slot(b"cred\0" + material.encode("utf-8", "surrogatepass"))]
        person = auth.get("sudo_as_login") or auth.get("user_login") or auth.get("script_name")
        if isinstance(person, str) and person:
            slots.append(self.clock.slot(b"person\0" + person.encode("utf-8", "surrogatepass")))
        return slots

    def key(self, method: str, params: list[Any], headers: Mapping[str, str], where: str = "") -> bytes | None:
        """The key identical calls share, or None when this call must go alone. `where`: what
        else the answer depends on (a whole read's: the URL it was asked at)."""
        if not self.enabled or method not in SAFE_METHODS or not params or not isinstance(params[0], dict):
            return None
        auth = {k: v for k, v in params[0].items() if k not in _NOT_IDENTITY}
        try:
            material = jsoncodec.dumps([method, [headers.get(h, "") for h in _PASSED_HEADERS],
                                        sorted(auth.items()), params[1:], where])
        except (TypeError, ValueError):
            return None
        return self._hash(material)

    # -- writes ------------------------------------------------------------------------
    def wrote(self, auth: Any) -> None:
        """A write by this caller returned (or failed): their later reads must not join older calls."""
        at = self._now()
        if isinstance(auth, Mapping):
            self.clock.mark(self._caller_slots(auth), at)
        else:
            self.clock.mark([0], at)

    def wrote_unknown(self) -> None:
        """A write whose caller the cache cannot name (a raw upload): no read joins an older call."""
        self.clock.mark([0], self._now())

    def _last_write(self, auth: Mapping[str, Any]) -> float:
        return max(self.clock.get(0), *(self.clock.get(s) for s in self._caller_slots(auth)))

    # -- reads -------------------------------------------------------------------------
    async def call(self, key: bytes, method: str, auth: Mapping[str, Any],
                   send: Callable[[], Awaitable[Answer]]) -> tuple[Answer, bool]:
        """The answer for this call, and whether it came from another caller's call.

        `send` makes the call to the site (raising its Fault when the site cannot be
        reached); a caller that leaves does not cancel a call others wait for.
        """
        now = self._now()
        self._expire(now)
        since = self._last_write(auth)
        flight = self._flights.get(key)
        kind = "in_flight"
        if flight is None or flight.started <= since:
            flight = self._kept.get(key)
            kind = "recent"
            if flight is not None and flight.started <= since:
                flight = None
        if flight is not None:
            self.shared += 1
            if self.on_shared is not None:
                self.on_shared(method, kind)
            return await asyncio.shield(flight.task), True
        task = asyncio.ensure_future(send())
        flight = _Flight(now, task)
        self.calls += 1
        self._flights[key] = flight
        task.add_done_callback(lambda t: self._landed(key, flight, t))
        return await asyncio.shield(task), False

    def _landed(self, key: bytes, flight: _Flight, task: asyncio.Future[Answer]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if task.cancelled() or task.exception() is not None or self.window <= 0:
            return
        answer = task.result()
        size = len(answer.body)
        if answer.status != 200 or size > MAX_KEPT_ANSWER:
            return
        old = self._kept.get(key)
        if old is not None:
            if old.started > flight.started:  # a newer call's answer is kept already
                return
            del self._kept[key]
            self._kept_bytes -= old.size
        flight.answered_at, flight.size = self._now(), size
        self._kept[key] = flight
        self._kept_bytes += size
        while self._kept_bytes > MAX_KEPT_BYTES and self._kept:
            _, dropped = self._kept.popitem(last=False)
            self._kept_bytes -= dropped.size

    def _expire(self, now: float) -> None:
        """Forget answers older than the window (kept in arrival order: oldest first)."""
        while self._kept:
            key, f = next(iter(self._kept.items()))
            if f.answered_at is not None and now - f.answered_at < self.window:
                return
            del self._kept[key]
            self._kept_bytes -= f.size
