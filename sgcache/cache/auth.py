"""Who may read from the cache: exactly the callers the site would accept.

Unknown credentials are verified against the site once; the verdict is remembered
for a short time keyed by a salted hash of the auth dict (never the secret itself).
During a site outage, callers verified within the grace period keep cached reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

from ..protocol import errors
from ..upstream import Upstream, UpstreamUnavailable

log = logging.getLogger("sgcache.auth")

_AUTH_KEYS = ("script_name", "script_key", "user_login", "user_password", "auth_token",
              "session_token", "sudo_as_login")


@dataclass
class _Verdict:
    ok: bool
    at: float
    message: str = ""


def identity(auth: Mapping[str, Any]) -> str:
    """A printable caller identity for logs: script or login, plus sudo; never secrets."""
    who = auth.get("script_name") or auth.get("user_login") or ("session" if auth.get("session_token") else "?")
    sudo = auth.get("sudo_as_login")
    return f"{who} as {sudo}" if sudo else str(who)


class AuthVerifier:
    def __init__(self, upstream: Upstream, *, ttl: float = 300.0, grace: float = 3600.0,
                 allow_scripts: tuple[str, ...] = (), allow_logins: tuple[str, ...] = (),
                 clock: Any = time.monotonic) -> None:
        self.upstream = upstream
        self.ttl = ttl
        self.grace = grace
        self.allow_scripts = set(allow_scripts)
        self.allow_logins = set(allow_logins)
        self._salt = os.urandom(16)
        self._verdicts: dict[str, _Verdict] = {}
        self._clock = clock

    def _key(self, auth: Mapping[str, Any]) -> str:
        material = json.dumps({k: auth.get(k) for k in _AUTH_KEYS}, sort_keys=True, default=str)
        return hashlib.sha256(self._salt + material.encode()).hexdigest()

    def _allowed(self, auth: Mapping[str, Any]) -> bool:
        if not self.allow_scripts and not self.allow_logins:
            return True
        if auth.get("script_name") in self.allow_scripts:
            return True
        login = auth.get("user_login")
        return login is not None and login in self.allow_logins

    async def check(self, auth: Any, entity_type: str) -> None:
        """Return if the site would accept these credentials; raise AuthenticationFault if not."""
        if not isinstance(auth, dict) or not any(auth.get(k) for k in
                                                 ("script_name", "user_login", "session_token")):
            raise errors.auth_failed()
        if not self._allowed(auth):
            raise errors.auth_failed("This script or user may not use the cache.")
        key = self._key(auth)
        now = self._clock()
        v = self._verdicts.get(key)
        if v is not None and now - v.at < self.ttl:
            if v.ok:
                return
            raise errors.auth_failed(v.message)
        try:
            await self.upstream.call("read", {
                "type": entity_type, "return_fields": ["id"],
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "is", "values": [0]}]},
                "return_only": "active", "paging": {"entities_per_page": 1, "current_page": 1},
                "return_paging_info_without_counts": False}, auth=auth)
        except errors.AuthenticationFault as e:
            self._verdicts[key] = _Verdict(False, now, e.message)
            raise
        except UpstreamUnavailable:
            if v is not None and v.ok and now - v.at < self.grace:
                log.warning("site unreachable; serving %s from a verification %.0fs old",
                            identity(auth), now - v.at)
                return
            raise
        # Any other Fault (a refused sudo, a permission rule) propagates uncached: the
        # caller then talks to the site directly and gets the site's own answer.
        self._verdicts[key] = _Verdict(True, now)
        if len(self._verdicts) > 100_000:
            self._verdicts = {k: x for k, x in self._verdicts.items() if now - x.at < self.ttl}
