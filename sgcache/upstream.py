"""The one client for the real site: pooling, timeouts, retries and auth in one place.

The sync paths (scans, events), the passthrough and the auth check all call the site
through this class, so none of them grows its own retry loop or leaks a secret.
Tests swap the httpx transport instead of patching functions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Mapping

import httpx

from .protocol import errors

log = logging.getLogger("sgcache.upstream")

#: Methods that change nothing on the site, so a 502/503/504 may be retried.
SAFE_METHODS = frozenset({
    "info", "read", "summarize", "schema_read", "schema_entity_read", "schema_field_read",
    "text_search", "query_display_name_cache", "note_thread_contents", "activity_stream",
    "work_schedule_read", "followers", "following", "preferences_read", "user_subscriptions_read",
})
RETRY_STATUSES = frozenset({502, 503, 504})


class UpstreamUnavailable(errors.Fault):
    """The site could not be reached (or kept failing) within the configured time."""

    code = errors.UPSTREAM_UNAVAILABLE


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
        self.calls: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def script_auth(self) -> dict[str, str]:
        """The cache's own credentials, for sync calls; never logged."""
        return dict(self._script)

    # -- RPC ---------------------------------------------------------------------------
    async def post_json(self, body: bytes, method: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST an api3 body as-is; retries 502/503/504 and connect errors for safe methods."""
        self.calls[method] = self.calls.get(method, 0) + 1
        hdrs = {"content-type": "application/json; charset=utf-8"}
        if headers:
            hdrs.update({k: v for k, v in headers.items() if k.lower() in ("user-agent", "locale")})
        attempts = 1 + (self.retries if method in SAFE_METHODS else 0)
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff * attempt)
            try:
                resp = await self.client.post("/api3/json", content=body, headers=hdrs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as e:
                # Nothing reached the site (or the connection broke before a reply): safe
                # methods may retry; writes must not, the site may have applied them.
                last = e
                self._count_error(type(e).__name__)
                continue
            except httpx.TimeoutException as e:
                self._count_error("timeout")
                raise UpstreamUnavailable(f"The site did not answer within {self.timeout.read}s.") from e
            except httpx.HTTPError as e:
                self._count_error(type(e).__name__)
                raise UpstreamUnavailable(f"The site could not be reached: {type(e).__name__}.") from e
            if resp.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                self._count_error(str(resp.status_code))
                continue
            if resp.status_code >= 300:
                self._count_error(str(resp.status_code))
            return resp
        raise UpstreamUnavailable(f"The site could not be reached: {type(last).__name__ if last else 'error'}.")

    def _count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def call(self, method: str, params: Any = None, auth: Mapping[str, Any] | None = None) -> Any:
        """Call a method and return its `results`; faults from the site are raised as Fault."""
        plist: list[Any] = []
        if method != "info":
            plist.append(dict(auth) if auth is not None else self.script_auth)
        if params is not None:
            plist.append(params)
        body = json.dumps({"method_name": method, "params": plist}, ensure_ascii=False).encode()
        resp = await self.post_json(body, method)
        if resp.status_code >= 300:
            raise UpstreamUnavailable(f"The site answered HTTP {resp.status_code}.")
        try:
            data = resp.json()
        except ValueError as e:
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
            return await self.client.send(req, stream=True)
        except httpx.TimeoutException as e:
            self._count_error("timeout")
            raise UpstreamUnavailable(f"The site did not answer within {self.timeout.read}s.") from e
        except httpx.HTTPError as e:
            self._count_error(type(e).__name__)
            raise UpstreamUnavailable(f"The site could not be reached: {type(e).__name__}.") from e
