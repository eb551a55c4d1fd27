"""Site and user settings: `preferences_read`, user subscriptions, a project's last access,
and the UI-only calls the mock refuses (`export_page`, `nav_expand`, `nav_search`).

Preferences are the keys a site answers (the python-api test lists them); unknown
names are left out, as the site does. Subscriptions and last accesses live in the
store's meta. ``export_page`` needs a page layout marked API-exportable in the web UI,
which the mock has no notion of, so after validating its parameters it answers the
site's own refusal; ``nav_expand``/``nav_search`` need the navigation hierarchy
configured in the web UI and are refused the same way, never answered wrongly.
"""

from __future__ import annotations

import json
from typing import Any

from ..protocol import errors
from ..protocol.values import format_datetime, utcnow
from .auth import Actor

PREFERENCES: dict[str, Any] = {
    "date_component_order": "month_day",
    "duration_units": "days",
    "enable_rv_integration": True,
    "enable_shotgun_review_for_rv": False,
    "format_currency_fields_decimal_options": "$1,000.99",
    "format_currency_fields_display_dollar_sign": False,
    "format_currency_fields_negative_options": "- $1,000",
    "format_date_fields": "08/04/22 OR 04/08/22 (depending on the Month order preference)",
    "format_float_fields": "9,999.99",
    "format_float_fields_rounding": "9.999999",
    "format_footage_fields": "10-05",
    "format_number_fields": "1,000",
    "format_time_hour_fields": "12 hour",
    "hours_per_day": 8.0,
    "last_day_work_week": None,
    "support_local_storage": True,
    "view_master_settings": json.dumps({"status_groups": []}),
}


class SiteSettings:
    def __init__(self, store: Any) -> None:
        self.store = store

    def preferences_read(self, actor: Actor, params: Any) -> dict[str, Any]:
        prefs = (params or {}).get("prefs") if isinstance(params, (dict, type(None))) else None
        if prefs is None:
            prefs = []
        if not isinstance(prefs, list) or not all(isinstance(p, str) for p in prefs):
            raise errors.crud("preferences_read", "'prefs' must be a list of preference names")
        values = {**PREFERENCES, **self.store.meta.get("preferences", {})}
        return dict(values) if not prefs else {p: values[p] for p in prefs if p in values}

    # -- subscriptions ---------------------------------------------------------------------
    def subscriptions_read(self, actor: Actor, params: Any) -> list[dict[str, Any]]:
        subs = self.store.meta.get("user_subscriptions", {})
        return [{"humanUserId": int(uid), "subscription": s} for uid, s in sorted(subs.items(), key=lambda kv: int(kv[0]))
                if self.store.get_active("HumanUser", int(uid)) is not None]

    def subscriptions_create(self, actor: Actor, params: Any) -> dict[str, Any]:
        m = "user_subscriptions_create"
        users = params.get("users") if isinstance(params, dict) else None
        if not isinstance(users, list) or not users:
            raise errors.crud(m, "'users' must be a non-empty list")
        checked = []
        for u in users:
            uid = u.get("humanUserId") if isinstance(u, dict) else None
            sub = u.get("subscription") if isinstance(u, dict) else None
            if not isinstance(uid, int) or self.store.get_active("HumanUser", uid) is None:
                raise errors.crud(m, f"'humanUserId' must name an active HumanUser, got {uid!r}")
            if not (sub is None or isinstance(sub, str) or (isinstance(sub, list)
                                                            and all(isinstance(s, str) for s in sub))):
                raise errors.crud(m, f"'subscription' must be null, a string or a list of strings, got {sub!r}")
            checked.append((uid, sub))
        with self.store.transaction():
            subs = self.store.meta.setdefault("user_subscriptions", {})
            for uid, sub in checked:
                subs[str(uid)] = sub
            self.store.version += 1
        return {"status": "success"}

    # -- Project.last_accessed_by_current_user --------------------------------------------
    def project_accessed(self, actor: Actor, params: Any) -> dict[str, Any]:
        m = "update_project_last_accessed_by_current_user"
        if not isinstance(params, dict):
            raise errors.crud(m, "parameters must be an object")
        pid, uid = params.get("project_id"), params.get("user_id")
        if not isinstance(pid, int) or self.store.get_active("Project", pid) is None:
            raise errors.not_found(m, "Project", pid)
        if uid is None:
            if not actor.user or actor.user.get("type") != "HumanUser":
                raise errors.crud(m, "'user_id' is required when the caller is not a HumanUser")
            uid = actor.user["id"]
        if not isinstance(uid, int) or self.store.get_active("HumanUser", uid) is None:
            raise errors.not_found(m, "HumanUser", uid)
        now = format_datetime(utcnow())
        with self.store.transaction():
            self.store.meta.setdefault("project_last_accessed", {})[f"{pid}:{uid}"] = now
            self.store.version += 1
        return {"type": "Project", "id": pid, "last_accessed_by_current_user": now}

    # -- refused ---------------------------------------------------------------------------
    def export_page(self, actor: Actor, params: Any) -> Any:
        p = params if isinstance(params, dict) else {}
        if not p.get("format"):
            raise errors.Fault("'format' missing")
        if not p.get("page_id"):
            raise errors.Fault("'page_id' missing")
        raise errors.Fault(f"Export for Page id={p['page_id']} not available")

    def nav(self, method: str) -> Any:
        def refuse(actor: Actor, params: Any) -> Any:
            raise errors.crud(method, "the navigation hierarchy is not configured on this site")
        return refuse
