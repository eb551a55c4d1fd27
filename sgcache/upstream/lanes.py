"""Bounded pools of connections to the site, one per kind of traffic.

One shared pool let callers' traffic (a slow upload holds its connection while the
caller trickles the body) starve the cache's own calls: event polling, scans and the
verification of new callers then timed out behind it. Each lane is its own httpx
client with its own connection limit, so a full lane only delays its own kind:

- ``own``: the cache's calls with its own script (events, scans, refresh, probes);
- ``auth``: verifying a caller's credentials;
- ``passthrough``: callers' requests sent on as they came (api3 calls, uploads, downloads).

No lane keeps cookies: a ``Set-Cookie`` from the site belongs to the one caller whose
request it answers (it is handed back to that caller), never to the next request.
"""

from __future__ import annotations

import http.cookiejar
import urllib.request
from dataclasses import dataclass
from typing import Any

import httpx

OWN, AUTH, PASSTHROUGH = "own", "auth", "passthrough"
LANES = (OWN, AUTH, PASSTHROUGH)


class NoCookieJar(http.cookiejar.CookieJar):
    """A cookie jar that never keeps anything, so no cookie outlives the request it came on."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: urllib.request.Request) -> None:
        return None


@dataclass(frozen=True)
class LaneLimits:
    """Connections per lane; `passthrough_wait` is how long a caller's call may wait for one."""

    own: int = 20
    auth: int = 20
    passthrough: int = 64
    passthrough_wait: float = 5.0


def lane_client(base_url: str, connections: int, timeout: httpx.Timeout,
                transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """One lane's httpx client: its own bounded pool, no cookie jar, no redirects followed."""
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, transport=transport, cookies=NoCookieJar(),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False)
