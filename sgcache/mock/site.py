"""The whole mock site minus HTTP: store, query engine, auth, writes, events, schema.

``Site.call(method_name, params)`` is the RPC dispatcher the HTTP layer uses;
tests can drive it in-process. Every call holds the store lock for its whole
duration, so each RPC is atomic and reads see a consistent store.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from ..protocol import errors
from ..schema import Schema
from . import permissions, presets
from .activity import activity_stream
from .auth import EVENTS_FIELDS, Actor, Authenticator, hash_secret
from .events import CommitFaults, EventLog
from .follows import Follows
from .notes import note_thread
from .preferences import SiteSettings
from .query import Engine
from .schedule import WorkSchedule
from .schema_ops import SchemaOps
from .search import text_search
from .store import Store
from .summarize import Summarizer
from .thumbnails import Thumbnails
from .uploads import Uploads
from .writes import Writer

SERVER_VERSION = [8, 50, 0]
PAGE_SIZE = 500
DEFAULT_SCRIPT = "sgcache_mock"


def inverse_fields(schema: Schema) -> dict[tuple[str, str, str], str]:
    """Inverse link pairs from the built-in schema module, kept where both fields exist."""
    try:
        from .builtin_schema import INVERSE_FIELDS  # type: ignore[attr-defined]
    except Exception:  # the built-in schema is optional here
        return {}
    return {k: v for k, v in INVERSE_FIELDS.items()
            if schema.get_field(k[0], k[1]) and schema.get_field(k[2], v)}


class Site:
    def __init__(self, store: Store, base_url: str = "", commit_faults: CommitFaults | None = None) -> None:
        self.store = store
        self.base_url = base_url
        self.engine = Engine(store, lambda: self.base_url)
        self.events = EventLog(store, self.engine.name_of, commit_faults)
        self.auth = Authenticator(store)
        self.writer = Writer(store, self.engine, self.events, inverse_fields(store.schema))
        self.summarizer = Summarizer(self.engine)
        self.schema_ops = SchemaOps(store, self.events)
        self.thumbnails = Thumbnails(self.engine, self.events)
        self.uploads = Uploads(self.writer, self.thumbnails, lambda: self.base_url)
        follows = Follows(self.engine)
        schedule = WorkSchedule(store)
        settings = SiteSettings(store)
        # Every RPC the shotgun_api3 client can send (docs/api3-methods.md), by family.
        self._methods: dict[str, Callable[[Actor, Any], Any]] = {
            "read": lambda a, p: permissions.read(store, a, p, lambda q: self.engine.read(
                presets.apply(self.engine, q) if isinstance(q, dict) else q)),
            "create": self.writer.create,
            "update": self.writer.update,
            "delete": self.writer.delete,
            "revive": self.writer.revive,
            "batch": self.writer.batch,
            "summarize": lambda a, p: permissions.summarize(store, a, p, self.summarizer.summarize),
            "schema_read": lambda a, p: self.schema_ops.schema_read(p),
            "schema_entity_read": lambda a, p: self.schema_ops.schema_entity_read(p),
            "schema_field_read": lambda a, p: self.schema_ops.schema_field_read(p),
            "schema_field_create": self.schema_ops.schema_field_create,
            "schema_field_update": self.schema_ops.schema_field_update,
            "schema_field_delete": self.schema_ops.schema_field_delete,
            "get_session_token": lambda a, p: {"session_id": self.auth.session_token(a)},
            "query_display_name_cache": lambda a, p: text_search(self.engine, p),
            "note_thread_contents": lambda a, p: note_thread(self.engine, p),
            "activity_stream": lambda a, p: activity_stream(self.engine, p),
            "follow": follows.follow,
            "unfollow": follows.unfollow,
            "followers": follows.followers,
            "following": follows.following,
            "work_schedule_read": schedule.read,
            "work_schedule_update": schedule.update,
            "preferences_read": settings.preferences_read,
            "user_subscriptions_read": settings.subscriptions_read,
            "user_subscriptions_create": settings.subscriptions_create,
            "update_project_last_accessed_by_current_user": settings.project_accessed,
            "export_page": settings.export_page,
            "nav_expand": settings.nav("nav_expand"),
            "nav_search": settings.nav("nav_search"),
        }

    @property
    def methods(self) -> list[str]:
        return ["info", *self._methods]

    def info(self) -> dict[str, Any]:
        """The flags the client (page size, upload path) and Toolkit (login method) read."""
        return {"version": SERVER_VERSION, "full_version": SERVER_VERSION,
                "api_max_entities_per_page": PAGE_SIZE, **self.uploads.info(),
                "user_authentication_method": "default", "unified_login_flow_enabled": False,
                "authentication_app_session_launcher_enabled": False, "totp_enabled": False}

    def call(self, method: Any, params: Any) -> Any:
        """Run one RPC; raises errors.Fault for anything the site would refuse."""
        if method == "info":
            return self.info()
        if not isinstance(method, str) or method not in self._methods:
            raise errors.unknown_method(method)
        if not isinstance(params, list) or not params:
            raise errors.auth_failed("Authentication failed: no credentials were given.")
        with self.store.lock:
            actor = self.auth.authenticate(params[0], method)
            self.thumbnails.settle()
            return self._methods[method](actor, params[1] if len(params) > 1 else None)

    # -- accounts --------------------------------------------------------------------
    def add_api_user(self, name: str, key: str, generate_events: bool = True) -> int:
        """Create (or re-key) an ApiUser; used at start-up, writes no events."""
        with self.store.transaction():
            rec = self.auth.find_script(name)
            if rec is None:
                eid = self.store.allocate_id("ApiUser")
                rec = {"id": eid, "firstname": name}
                if self.store.schema.get_field("ApiUser", "permission_rule_set"):  # scripts start as API Admin
                    rec["permission_rule_set"] = permissions.ensure_rule_set(self.store, "API Admin")
                self.store.insert("ApiUser", rec)
            rec = self.store.modify("ApiUser", rec["id"])
            rec["salted_password"] = hash_secret(key)
            field = self.auth.events_field() or EVENTS_FIELDS[0]
            rec[field] = generate_events
            return rec["id"]

    def add_human_user(self, login: str, password: str, name: str | None = None) -> int:
        with self.store.transaction():
            rec = self.auth.find_login(login)
            if rec is None:
                eid = self.store.allocate_id("HumanUser")
                rec = {"id": eid, "login": login, "name": name or login, "sg_status_list": "act"}
                if self.store.schema.get_field("HumanUser", "permission_rule_set"):  # --human-user: an Admin
                    rec["permission_rule_set"] = permissions.ensure_rule_set(self.store, "Admin")
                self.store.insert("HumanUser", rec)
            rec = self.store.modify("HumanUser", rec["id"])
            rec["password_proxy"] = hash_secret(password)
            return rec["id"]

    def site_credentials(self) -> tuple[str, str]:
        """The site's own script (created on first start, kept in the state)."""
        creds = self.store.meta.get("site_script")
        if not creds or self.auth.find_script(creds[0]) is None:
            creds = (DEFAULT_SCRIPT, secrets.token_hex(20))
            self.add_api_user(*creds)
            self.store.meta["site_script"] = creds
        return creds[0], creds[1]
