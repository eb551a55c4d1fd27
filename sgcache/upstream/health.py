"""Whether the site is reachable, judged only from the cache's own calls.

The auth grace period (a caller verified a while ago keeps cached reads during an
outage) must not be something a caller can switch on: a passthrough call that times
out, or a full pool of callers' connections, says nothing about the site. So only the
``own`` lane reports here, one sample per attempt, and only outcomes that are the
site's: an answer (up), or no connection, no answer in time, 502/503/504 (down).
Waiting for a free connection in our own pool is neither.

A caller's failed verification is the site's fault (and the grace may apply) only if
the cache's own attempts made since it began failed too: at least `PROBES` of them,
probing the site with `info` for the missing ones, and any failure among them counts
(a site failing most requests rarely answers three in a row). `down`, which lets the
auth check skip the site for a while, asks more: at least half of the own attempts of
the last `window` seconds failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable

log = logging.getLogger("sgcache.upstream")

#: Seconds of own attempts the verdict is drawn from.
DOWN_WINDOW = 5.0
#: Attempts remembered at most (the window is short; this only bounds a burst).
KEEP = 64
#: Own attempts needed to judge a failure: the probe makes up the difference.
PROBES = 3


class SiteHealth:
    """Outcomes of the cache's own recent attempts, and a probe when none is recent enough."""

    def __init__(self, window: float = DOWN_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, bool]] = deque(maxlen=KEEP)
        self._probe: asyncio.Future[None] | None = None
        self._probe_at = 0.0

    def now(self) -> float:
        """The time on this object's clock, to pass back as `since`."""
        return self._clock()

    def record(self, ok: bool) -> None:
        """One attempt of the cache's own: the site answered (`ok`) or failed to."""
        self._samples.append((self._clock(), ok))

    def _since(self, since: float) -> list[bool]:
        return [ok for t, ok in self._samples if t >= since]

    @property
    def down(self) -> bool:
        """True while at least half of the own attempts of the last `window` seconds failed."""
        recent = self._since(self._clock() - self.window)
        return bool(recent) and 2 * recent.count(False) >= len(recent)

    async def unreachable(self, since: float, probe: Callable[[int], Awaitable[object]]) -> bool:
        """Whether any of the (at least `PROBES`) own attempts made since `since` failed.

        `since` is when the failure being judged began: older successes say nothing of
        it. Missing attempts are made by `probe(n)`; concurrent askers share a probe
        started at `since` or later.
        """
        missing = PROBES - len(self._since(since))
        if missing > 0:
            if self._probe is None or self._probe_at < since:
                self._probe_at = self._clock()
                self._probe = asyncio.ensure_future(self._run(probe, missing))
            await asyncio.shield(self._probe)
        recent = self._since(since)
        return bool(recent) and not all(recent)

    async def _run(self, probe: Callable[[int], Awaitable[object]], n: int) -> None:
        try:
            await probe(n)
        except Exception as e:  # the probe's attempts are recorded by the calls themselves
            log.debug("site probe failed: %s", type(e).__name__)
