"""Who may read from the cache: exactly the callers the site would accept.

Unknown credentials are verified against the site once; the verdict is remembered
for a short time keyed by a salted hash of the auth dict (never the secret itself).
During a site outage, callers verified within the grace period keep cached reads.
"Outage" is judged from the cache's own calls to the site (`Upstream.site_unreachable`),
never from callers' traffic: otherwise anyone who can make passthrough calls time out
could let a key revoked on the site read again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..protocol import errors
from ..upstream import AUTH, Upstream, UpstreamBusy, UpstreamUnavailable

log = logging.getLogger("sgcache.auth")

#: Keys that do not change who the caller is (a per-client-instance uuid).
_NOT_IDENTITY = frozenset({"session_uuid", "reject_if_expired"})
#: A refusal is remembered at most this long, so a key created on the site just after
#: a failed attempt works soon, while a flood of bad keys still reaches the site rarely.
REFUSAL_TTL = 30.0
#: Verdicts kept at most; the least recently used go first.
MAX_VERDICTS = 100_000


@dataclass
class _Verdict:
    ok: bool
    at: float
    message: str = ""


def identity(auth: Any) -> str:
    """A printable caller identity for logs: script or login, plus sudo; never secrets."""
    if not isinstance(auth, Mapping):
        return "?"
    who = auth.get("script_name") or auth.get("user_login") or ("session" if auth.get("session_token") else "?")
    sudo = auth.get("sudo_as_login")
    text = f"{who} as {sudo}" if sudo else str(who)
    return text[:100]


def _credential_kind(auth: Mapping[str, Any]) -> str | None:
    """Which credentials the site will look at (its precedence), if they are well formed."""
    def s(k: str) -> bool:
        return isinstance(auth.get(k), str) and bool(auth.get(k))
    if "user_login" in auth:
        return "login" if s("user_login") and s("user_password") else None
    if "script_name" in auth:
        return "script" if s("script_name") and s("script_key") else None
    if "session_token" in auth:
        return "session" if s("session_token") else None
    return None


class AuthVerifier:
    """Checks callers against the site, once per credential per `ttl` seconds.

    Concurrent first requests with the same credentials share one verification call.
    """

    def __init__(self, upstream: Upstream, *, ttl: float = 300.0, grace: float = 3600.0,
                 allow_scripts: tuple[str, ...] = (), allow_logins: tuple[str, ...] = (),
                 refusal_ttl: float = REFUSAL_TTL, max_verdicts: int = MAX_VERDICTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self.ttl = ttl
        self.grace = max(grace, ttl)
        self.refusal_ttl = min(refusal_ttl, ttl)
        self.allow_scripts = set(allow_scripts)
        self.allow_logins = set(allow_logins)
        self.max_verdicts = max_verdicts
        self._salt = os.urandom(16)
        self._verdicts: OrderedDict[str, _Verdict] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._clock = clock
        self.verifications = 0  # calls made to the site, for status and tests

    def _key(self, auth: Mapping[str, Any]) -> str:
        # repr of the sorted items: unambiguous (types show) and far cheaper than JSON.
        material = repr(sorted((k, v) for k, v in auth.items() if k not in _NOT_IDENTITY))
        return hashlib.sha256(self._salt + material.encode("utf-8", "surrogatepass")).hexdigest()

    def _allowed(self, auth: Mapping[str, Any], kind: str) -> bool:
        """The optional allow-lists. A session token names nobody the cache can check, so
        with a list configured it is refused; a script sudoing needs the script listed."""
        if not self.allow_scripts and not self.allow_logins:
            return True
        if kind == "script":
            return auth["script_name"] in self.allow_scripts
        if kind == "login":
            return auth["user_login"] in self.allow_logins
        return False

    def settled(self, auth: Any) -> bool:
        """Whether `check(auth)` can answer without asking the site (a fresh verdict, or
        credentials it refuses unseen): callers waiting for the site first give back
        their turn of the server (serve/fairness.py)."""
        if not isinstance(auth, dict) or _credential_kind(auth) is None:
            return True
        v = self._verdicts.get(self._key(auth))
        if v is None:
            return False
        age = self._clock() - v.at
        return age < (self.ttl if v.ok else self.refusal_ttl)

    async def check(self, auth: Any, entity_type: str) -> None:
        """Return if the site would accept these credentials; raise AuthenticationFault if not.

        Raises UpstreamUnavailable when the site cannot tell and no recent verdict can
        stand in for it, and the site's own Fault for anything else it says (a refused
        sudo, say), uncached, so the caller then gets the site's answer directly.
        """
        if not isinstance(auth, dict):
            raise errors.auth_failed()
        kind = _credential_kind(auth)
        if kind is None:
            raise errors.auth_failed()
        if not self._allowed(auth, kind):
            raise errors.auth_failed("This script or user may not use the cache.")
        key = self._key(auth)
        now = self._clock()
        v = self._verdicts.get(key)
        if v is not None:
            self._verdicts.move_to_end(key)
            if v.ok and now - v.at < self.ttl:
                return
            if not v.ok and now - v.at < self.refusal_ttl:
                raise errors.auth_failed(v.message)
            if v.ok and now - v.at < self.grace and self.upstream.site_down:
                return  # the cache's own calls find the site down: don't wait for it again
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._verify(key, auth, entity_type, v))
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        await asyncio.shield(fut)

    async def _verify(self, key: str, auth: Mapping[str, Any], entity_type: str, v: _Verdict | None) -> None:
        now = self._clock()
        started = self.upstream.health.now()
        self.verifications += 1
        try:
            await self.upstream.call("read", {
                "type": entity_type, "return_fields": ["id"],
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "is", "values": [0]}]},
                "return_only": "active", "paging": {"entities_per_page": 1, "current_page": 1},
                "return_paging_info_without_counts": False}, auth=auth, lane=AUTH)
        except errors.AuthenticationFault as e:
            self._remember(key, _Verdict(False, now, e.message))
            log.info("site refused %s", identity(auth))
            raise
        except UpstreamBusy:
            raise  # never sent (no free connection): the site said nothing, so no grace
        except UpstreamUnavailable:
            # Grace only if the site is really unreachable by the cache's own calls too:
            # callers' traffic must never be able to stand in for an outage.
            graced = v is not None and v.ok and now - v.at < self.grace
            if graced and await self.upstream.site_unreachable(started):
                log.warning("site unreachable; serving %s from a verification %.0fs old",
                            identity(auth), now - v.at)
                return
            raise
        # Any other Fault (a refused sudo, a permission rule) propagates uncached.
        self._remember(key, _Verdict(True, now))
        log.info("site accepted %s", identity(auth))

    def _remember(self, key: str, verdict: _Verdict) -> None:
        self._verdicts[key] = verdict
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.max_verdicts:
            self._verdicts.popitem(last=False)
