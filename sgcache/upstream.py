"""The one client for the real site: pooling, timeouts, retries and auth in one place.

The sync paths (scans, events), the passthrough and the auth check all call the site
through this class, so none of them grows its own retry loop or leaks a secret.
Tests swap the httpx transport instead of patching functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Mapping

import httpx

from .config import Config
from .protocol import errors, jsoncodec
from .schema import Schema

log = logging.getLogger("sgcache.upstream")

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
#: How long after a failed call the site counts as down (see `Upstream.site_down`).
DOWN_WINDOW = 5.0


def method_label(method: object) -> str:
    """A bounded label for a method name (metrics, counters)."""
    return method if isinstance(method, str) and method in KNOWN_METHODS else "other"


class UpstreamUnavailable(errors.Fault):
    """The site could not be reached (or kept failing) within the configured time."""

    code = errors.UPSTREAM_UNAVAILABLE


def unavailable_message(method: str, status: int | str) -> str:
    """What a caller is told when the site failed to give a result (an HTTP status or why)."""
    what = f"HTTP {status}" if isinstance(status, int) else status
    if method in SAFE_METHODS:
        return f"The site is unavailable ({what}); '{method}' failed. Try again later."
    return (f"The site is unavailable ({what}); '{method}' was not retried "
            "and may or may not have been applied. Check before repeating it.")


class Upstream:
    """An async api3 client for the site."""

    def __init__(self, base_url: str, *, script_name: str = "", script_key: str = "",
                 timeout: float = 30.0, connect_timeout: float = 5.0, retries: int = 2,
                 backoff: float = 0.25, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 100) -> None:
        self.base_url = base_url.rstrip("/")
        self._script = {"script_name": script_name, "script_key": script_key}
        self.retries = retries
        self.backoff = backoff
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False)
        #: the whole call, retries and backoff included, must finish within this
        self.deadline = timeout
        self.calls: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._last_ok = 0.0
        self._last_fail = 0.0

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def script_auth(self) -> dict[str, str]:
        """The cache's own credentials, for sync calls; never logged."""
        return dict(self._script)

    # -- RPC ---------------------------------------------------------------------------
    async def post_json(self, body: bytes, method: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST an api3 body as-is, within `deadline` seconds in all.

        502/503/504 and broken connections are retried only for SAFE_METHODS: a write
        may have been applied before the failure, and repeating it could apply it twice.
        Raises UpstreamUnavailable when the site cannot be reached in time.
        """
        label = method_label(method)
        self.calls[label] = self.calls.get(label, 0) + 1
        hdrs = {"content-type": "application/json; charset=utf-8"}
        if headers:
            hdrs.update({k: v for k, v in headers.items() if k.lower() in ("user-agent", "locale")})
        try:
            async with asyncio.timeout(self.deadline):
                resp = await self._post_with_retries(body, method, hdrs)
        except TimeoutError as e:
            self._failed("timeout")
            raise UpstreamUnavailable(unavailable_message(
                method, f"no answer within {self.deadline:g}s")) from e
        if resp.status_code in RETRY_STATUSES:
            self._failed(str(resp.status_code))
        else:
            self._last_ok = time.monotonic()
            if resp.status_code >= 300:
                self._count_error(str(resp.status_code))
        return resp

    async def _post_with_retries(self, body: bytes, method: str, hdrs: dict[str, str]) -> httpx.Response:
        attempts = 1 + (self.retries if method in SAFE_METHODS else 0)
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff * attempt)
            try:
                resp = await self.client.post("/api3/json", content=body, headers=hdrs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                    httpx.ReadError, httpx.WriteError) as e:
                # Nothing reached the site (or the connection broke before a reply): safe
                # methods may retry; writes must not, the site may have applied them.
                last = e
                self._count_error(type(e).__name__)
                continue
            except httpx.TimeoutException as e:
                self._failed("timeout")
                raise UpstreamUnavailable(unavailable_message(
                    method, f"no answer within {self.timeout.read:g}s")) from e
            except httpx.HTTPError as e:
                self._failed(type(e).__name__)
                raise UpstreamUnavailable(unavailable_message(method, type(e).__name__)) from e
            if resp.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                self._count_error(str(resp.status_code))
                await resp.aclose()
                continue
            return resp
        self._failed("unreachable")
        raise UpstreamUnavailable(unavailable_message(
            method, f"connection failed: {type(last).__name__ if last else 'error'}"))

    @property
    def site_down(self) -> bool:
        """True while the last call failed for want of the site, a few seconds ago at most.

        Lets callers with a choice (the auth check during its grace period) skip a call
        that would only wait for the same failure again.
        """
        return self._last_fail > self._last_ok and time.monotonic() - self._last_fail < DOWN_WINDOW

    def _failed(self, kind: str) -> None:
        self._last_fail = time.monotonic()
        self._count_error(kind)

    def _count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def call(self, method: str, params: Any = None, auth: Mapping[str, Any] | None = None) -> Any:
        """Call a method and return its `results`; faults from the site are raised as Fault."""
        plist: list[Any] = []
        if method != "info":
            plist.append(dict(auth) if auth is not None else self.script_auth)
        if params is not None:
            plist.append(params)
        body = jsoncodec.dumps({"method_name": method, "params": plist})
        resp = await self.post_json(body, method)
        if resp.status_code >= 300:
            raise UpstreamUnavailable(unavailable_message(method, resp.status_code))
        try:
            data = jsoncodec.loads(resp.content)
        except (ValueError, RecursionError) as e:
            raise UpstreamUnavailable("The site sent a reply that is not JSON.") from e
        if isinstance(data, dict) and data.get("exception"):
            code = data.get("error_code")
            cls = errors.AuthenticationFault if code == errors.AUTH_FAILED else errors.Fault
            raise cls(str(data.get("message", "Unknown Error")), code if isinstance(code, int) else None)
        if isinstance(data, dict) and "results" in data:
            return data["results"]
        return data

    async def read_pages(self, entity_type: str, return_fields: list[str], *,
                         filters: dict[str, Any] | None = None, return_only: str = "active",
                         page_size: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield pages of entities ordered by id using keyset paging (`id > last`)."""
        last_id = 0
        base = filters or {"logical_operator": "and", "conditions": []}
        while True:
            f = {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "greater_than", "values": [last_id]}, base]}
            res = await self.call("read", {
                "type": entity_type, "return_fields": return_fields, "filters": f,
                "return_only": return_only, "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": page_size, "current_page": 1},
                "api_return_image_urls": True, "return_paging_info_without_counts": True})
            ents = res.get("entities") or []
            if not ents:
                return
            yield ents
            last_id = ents[-1]["id"]
            if len(ents) < page_size:
                return

    # -- raw HTTP (uploads, downloads) --------------------------------------------------
    async def stream(self, method: str, path: str, *, headers: Mapping[str, str],
                     body: AsyncIterator[bytes] | bytes | None, query: str = "") -> httpx.Response:
        """Send a raw request and return the response with its body still streaming."""
        url = path + (f"?{query}" if query else "")
        req = self.client.build_request(method, url, headers=headers, content=body)
        try:
            resp = await self.client.send(req, stream=True)
            self._last_ok = time.monotonic()
            return resp
        except httpx.TimeoutException as e:
            self._failed("timeout")
            raise UpstreamUnavailable(f"The site did not answer within {self.timeout.read:g}s.") from e
        except httpx.HTTPError as e:
            self._failed(type(e).__name__)
            raise UpstreamUnavailable(f"The site could not be reached: {type(e).__name__}.") from e


def make_upstream(config: Config, transport: httpx.AsyncBaseTransport | None = None) -> Upstream:
    """The cache's site client, as the config describes it (`transport` swaps the network in tests)."""
    return Upstream(config.shotgun_url, script_name=config.script_name, script_key=config.script_key,
                    timeout=config.upstream_timeout, connect_timeout=config.upstream_connect_timeout,
                    transport=transport)


async def fetch_site_schema(upstream: Upstream) -> Schema:
    """The site's whole schema, read with the cache's own script credentials."""
    schema_read = await upstream.call("schema_read")
    entity_read = await upstream.call("schema_entity_read")
    return Schema.from_site(schema_read, entity_read)
