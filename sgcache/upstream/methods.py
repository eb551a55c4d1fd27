"""What the cache knows of api3 methods, and the Fault it raises when the site fails."""

from __future__ import annotations

from ..protocol import errors

#: Methods that change nothing on the site, so a 502/503/504 may be retried.
SAFE_METHODS = frozenset({
    "info", "read", "summarize", "schema_read", "schema_entity_read", "schema_field_read",
    "text_search", "query_display_name_cache", "note_thread_contents", "activity_stream",
    "work_schedule_read", "followers", "following", "preferences_read", "user_subscriptions_read",
})
#: The other methods the client sends: never repeated by the cache, whatever the failure
#: (a write may have been applied before the failure; a session token would be issued twice).
UNSAFE_METHODS = frozenset({
    "create", "update", "delete", "revive", "batch", "schema_field_create", "schema_field_update",
    "schema_field_delete", "work_schedule_update", "follow", "unfollow", "user_subscriptions_create",
    "update_project_last_accessed_by_current_user", "get_session_token", "export_page",
    "nav_expand", "nav_search",
})
#: Every method name worth its own metric label; anything else is counted as "other" so a
#: caller sending random method names cannot grow the counters without bound.
KNOWN_METHODS = SAFE_METHODS | UNSAFE_METHODS
RETRY_STATUSES = frozenset({502, 503, 504})


def method_label(method: object) -> str:
    """A bounded label for a method name (metrics, counters)."""
    return method if isinstance(method, str) and method in KNOWN_METHODS else "other"


class UpstreamUnavailable(errors.Fault):
    """The site could not be reached (or kept failing) within the configured time."""

    code = errors.UPSTREAM_UNAVAILABLE


class UpstreamBusy(UpstreamUnavailable):
    """The call was never sent: its lane had no free connection in time (says nothing of the site)."""


def unavailable_message(method: str, status: int | str) -> str:
    """What a caller is told when the site failed to give a result (an HTTP status or why)."""
    what = f"HTTP {status}" if isinstance(status, int) else status
    if method in SAFE_METHODS:
        return f"The site is unavailable ({what}); '{method}' failed. Try again later."
    return (f"The site is unavailable ({what}); '{method}' was not retried "
            "and may or may not have been applied. Check before repeating it.")


def busy_message(method: str, lane: str) -> str:
    """A call that never left the cache because its pool of connections stayed full."""
    return (f"sgcache has too many {lane} calls to the site in flight; '{method}' was not sent. "
            "Try again shortly.")
