"""Bounded pools of connections to the site, one per kind of traffic.

One shared pool let callers' traffic (a slow upload holds its connection while the
caller trickles the body) starve the cache's own calls: event polling, scans and the
verification of new callers then timed out behind it. Each lane is its own httpx
client with its own connection limit, so a full lane only delays its own kind:

- ``own``: the cache's calls with its own script (events, scans, refresh, probes);
- ``auth``: verifying a caller's credentials;
- ``passthrough``: callers' api3 calls sent on as they came (writes among them);
- ``transfer``: callers' uploads and downloads (raw paths), whose pace the caller sets.

No lane keeps cookies: a ``Set-Cookie`` from the site belongs to the one caller whose
request it answers (it is handed back to that caller), never to the next request.
"""

from __future__ import annotations

import http.cookiejar
import urllib.request
from dataclasses import dataclass
from typing import Any

import httpx

OWN, AUTH, PASSTHROUGH, TRANSFER = "own", "auth", "passthrough", "transfer"
LANES = (OWN, AUTH, PASSTHROUGH, TRANSFER)
#: Lanes carrying callers' traffic: a caller's call waits at most `LaneLimits.callers_wait`
#: for a free connection, and then is refused unsent.
CALLERS = frozenset({PASSTHROUGH, TRANSFER})


class NoCookieJar(http.cookiejar.CookieJar):
    """A cookie jar that never keeps anything, so no cookie outlives the request it came on."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: urllib.request.Request) -> None:
        return None


@dataclass(frozen=True)
class LaneLimits:
    """Connections per lane; `callers_wait` is how long a caller's call may wait for one."""

    own: int = 20
    auth: int = 20
    passthrough: int = 64
    transfer: int = 32
    callers_wait: float = 5.0

    def size(self, lane: str) -> int:
        return max(1, int(getattr(self, lane)))  # an empty pool would make every call wait


def lane_client(base_url: str, connections: int, timeout: httpx.Timeout,
                transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """One lane's httpx client: its own bounded pool, no cookie jar, no redirects followed."""
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, transport=transport, cookies=NoCookieJar(),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False)
