"""Who is calling: script keys, user passwords, session tokens and sudo, as the site does.

Secrets are stored salted and hashed (``sha256$salt$hex``) in the ApiUser's
``salted_password`` and the HumanUser's ``password_proxy``; a stored value
without that prefix is compared as plain text so hand-written demo data works.
Every failure to authenticate is an AuthenticationFault (error_code 102).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from ..protocol import errors
from .store import Store

#: Field names an ApiUser's "generate events" flag may have (built-in, real site).
EVENTS_FIELDS = ("generate_events", "generate_event_log_entries")


def hash_secret(secret: str, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(8)
    return f"sha256${salt}${hashlib.sha256((salt + secret).encode()).hexdigest()}"


def check_secret(stored: Any, secret: Any) -> bool:
    if not isinstance(stored, str) or not isinstance(secret, str):
        return False
    if stored.startswith("sha256$"):
        _, salt, _digest = stored.split("$", 2)
        return hmac.compare_digest(hash_secret(secret, salt), stored)
    return hmac.compare_digest(stored, secret)


@dataclass(frozen=True)
class Actor:
    """The authenticated caller: the user written into created_by/updated_by and events."""

    user: dict[str, Any] | None  # {"type","id"}
    generate_events: bool = True
    session_uuid: str | None = None
    script: dict[str, Any] | None = None  # the ApiUser when a script sudos

    @property
    def is_script(self) -> bool:
        return bool(self.user) and self.user["type"] == "ApiUser"


class Authenticator:
    """Turns the auth dict of a request into an Actor, or raises a Fault."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- accounts ----------------------------------------------------------------
    def events_field(self) -> str | None:
        for f in EVENTS_FIELDS:
            if self.store.schema.get_field("ApiUser", f):
                return f
        return None

    def generates_events(self, rec: dict[str, Any]) -> bool:
        for f in EVENTS_FIELDS:
            if f in rec and rec[f] is not None:
                return bool(rec[f])
        return True

    def find_script(self, name: Any) -> dict[str, Any] | None:
        if not isinstance(name, str):
            return None
        for i, rec in self.store.tables.get("ApiUser", {}).items():
            if rec.get("firstname") == name and not self.store.is_retired("ApiUser", i):
                return rec
        return None

    def find_login(self, login: Any) -> dict[str, Any] | None:
        if not isinstance(login, str):
            return None
        lf = login.casefold()
        for i, rec in self.store.tables.get("HumanUser", {}).items():
            if isinstance(rec.get("login"), str) and rec["login"].casefold() == lf \
                    and not self.store.is_retired("HumanUser", i):
                return rec
        return None

    # -- requests --------------------------------------------------------------------
    def authenticate(self, auth: Any, method: str = "read") -> Actor:
        if not isinstance(auth, dict):
            raise errors.auth_failed("Authentication failed: no credentials were given.")
        session_uuid = auth.get("session_uuid")
        if not isinstance(session_uuid, str):
            session_uuid = None
        if "user_login" in auth:
            rec = self.find_login(auth.get("user_login"))
            if rec is None or not check_secret(rec.get("password_proxy"), auth.get("user_password")) \
                    or rec.get("sg_status_list", "act") not in ("act", None):
                raise errors.auth_failed("Can't authenticate user.")
            actor = Actor({"type": "HumanUser", "id": rec["id"]}, True, session_uuid)
        elif "script_name" in auth:
            rec = self.find_script(auth.get("script_name"))
            if rec is None or not check_secret(rec.get("salted_password"), auth.get("script_key")):
                raise errors.auth_failed("Can't authenticate script.")
            actor = Actor({"type": "ApiUser", "id": rec["id"]}, self.generates_events(rec), session_uuid)
        elif "session_token" in auth:
            tokens = self.store.meta.setdefault("session_tokens", {})
            who = tokens.get(auth.get("session_token")) if isinstance(auth.get("session_token"), str) else None
            if who is None:
                raise errors.auth_failed("Session token is invalid or expired.")
            rec = self.store.get_active(who["type"], who["id"])
            if rec is None:
                raise errors.auth_failed("Session token is invalid or expired.")
            gen = self.generates_events(rec) if who["type"] == "ApiUser" else True
            actor = Actor(dict(who), gen, session_uuid)
        else:
            raise errors.auth_failed("Authentication failed: no credentials were given.")
        sudo = auth.get("sudo_as_login")
        if sudo is not None:
            actor = self._sudo(actor, sudo)
        return actor

    def _sudo(self, actor: Actor, login: Any) -> Actor:
        if not actor.is_script:
            raise errors.Fault(f"The user does not have permission to 'sudo': {login}")
        rec = self.find_login(login)
        if rec is None or rec.get("sg_status_list", "act") not in ("act", None):
            raise errors.Fault(f"The user does not have permission to 'sudo': "
                               f"no active HumanUser with login '{login}'")
        return Actor({"type": "HumanUser", "id": rec["id"]}, actor.generate_events,
                     actor.session_uuid, script=actor.user)

    def session_token(self, actor: Actor) -> str:
        token = secrets.token_hex(16)
        self.store.meta.setdefault("session_tokens", {})[token] = dict(actor.user or {})
        return token
