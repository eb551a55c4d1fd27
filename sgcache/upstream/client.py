"""The one client for the real site: lanes of connections, timeouts, retries and auth in one place.

The sync paths (scans, events), the passthrough and the auth check all call the site
through this class, so none of them grows its own retry loop or leaks a secret. Each
kind of traffic has its own bounded pool (`lanes.py`), and only the cache's own calls
tell whether the site is up (`health.py`). Tests swap the httpx transport instead of
patching functions.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, AsyncIterator, Mapping

import httpx

from ..config import Config
from ..protocol import errors, jsoncodec
from ..schema import Schema
from .health import SiteHealth
from .lanes import CALLERS, LANES, OWN, PASSTHROUGH, TRANSFER, LaneLimits, lane_client
from .methods import (
    RETRY_STATUSES,
    SAFE_METHODS,
    UpstreamBusy,
    UpstreamUnavailable,
    busy_message,
    method_label,
    unavailable_message,
)

log = logging.getLogger("sgcache.upstream")


class Upstream:
    """An async api3 client for the site."""

    def __init__(self, base_url: str, *, script_name: str = "", script_key: str = "",
                 timeout: float = 30.0, connect_timeout: float = 5.0, retries: int = 2,
                 backoff: float = 0.25, transport: httpx.AsyncBaseTransport | None = None,
                 limits: LaneLimits | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._script = {"script_name": script_name, "script_key": script_key}
        self.retries = retries
        self.backoff = backoff
        self.limits = limits or LaneLimits()
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.clients = {lane: lane_client(self.base_url, self.limits.size(lane), transport=transport,
                                          timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=(
                                              min(timeout, self.limits.callers_wait) if lane in CALLERS
                                              else timeout)))
                        for lane in LANES}
        #: the whole call, retries and backoff included, must finish within this
        self.deadline = timeout
        self.calls: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.health = SiteHealth()

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    @property
    def script_auth(self) -> dict[str, str]:
        """The cache's own credentials, for sync calls; never logged."""
        return dict(self._script)

    # -- RPC ---------------------------------------------------------------------------
    async def post_json(self, body: bytes, method: str, headers: Mapping[str, str] | None = None,
                        *, lane: str = PASSTHROUGH, retry: bool = True) -> httpx.Response:
        """POST an api3 body as-is on `lane` (a caller's call by default), within `deadline` seconds.

        502/503/504 and broken connections are retried only for SAFE_METHODS: a write
        may have been applied before the failure, and repeating it could apply it twice.
        Raises UpstreamUnavailable when the site cannot be reached in time, or when the
        lane has no free connection in time (then nothing was sent).
        """
        label = method_label(method)
        self.calls[label] = self.calls.get(label, 0) + 1
        hdrs = {"content-type": "application/json; charset=utf-8"}
        if headers:
            hdrs.update({k: v for k, v in headers.items() if k.lower() in ("user-agent", "locale")})
        try:
            async with asyncio.timeout(self.deadline):
                resp = await self._post_with_retries(body, method, hdrs, lane, retry)
        except TimeoutError as e:
            self._sample(lane, False)
            self._count_error("timeout")
            raise UpstreamUnavailable(unavailable_message(
                method, f"no answer within {self.deadline:g}s")) from e
        if resp.status_code >= 300 and resp.status_code not in RETRY_STATUSES:
            self._count_error(str(resp.status_code))
        return resp

    async def _post_with_retries(self, body: bytes, method: str, hdrs: dict[str, str],
                                 lane: str, retry: bool) -> httpx.Response:
        client = self.clients[lane]
        attempts = 1 + (self.retries if retry and method in SAFE_METHODS else 0)
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff * attempt)
            try:
                resp = _unbound(await client.post("/api3/json", content=body, headers=hdrs))
            except httpx.PoolTimeout as e:
                # Our own pool stayed full: nothing was sent, and it says nothing of the site.
                self._count_error(f"{lane}_pool_full")
                raise UpstreamBusy(busy_message(method, lane)) from e
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                    httpx.ReadError, httpx.WriteError) as e:
                # Nothing reached the site (or the connection broke before a reply): safe
                # methods may retry; writes must not, the site may have applied them.
                last = e
                self._sample(lane, False)
                self._count_error(type(e).__name__)
                continue
            except httpx.TimeoutException as e:
                self._sample(lane, False)
                self._count_error("timeout")
                raise UpstreamUnavailable(unavailable_message(
                    method, f"no answer within {self.timeout.read:g}s")) from e
            except httpx.HTTPError as e:
                self._sample(lane, False)
                self._count_error(type(e).__name__)
                raise UpstreamUnavailable(unavailable_message(method, type(e).__name__)) from e
            self._sample(lane, resp.status_code not in RETRY_STATUSES)
            if resp.status_code in RETRY_STATUSES:
                self._count_error(str(resp.status_code))
                if attempt + 1 < attempts:
                    await resp.aclose()
                    continue
            return resp
        self._count_error("unreachable")
        raise UpstreamUnavailable(unavailable_message(
            method, f"connection failed: {type(last).__name__ if last else 'error'}"))

    # -- the site's health, from the cache's own calls only ------------------------------
    @property
    def site_down(self) -> bool:
        """True while the cache's own last call failed for want of the site (a few seconds).

        Lets callers with a choice (the auth check during its grace period) skip a call
        that would only wait for the same failure again. Callers' traffic never sets it.
        """
        return self.health.down

    async def site_unreachable(self, since: float) -> bool:
        """Whether the site is really down, by the cache's own calls since `since`
        (`health.now()` before the failed call being judged), or else an `info` probe."""
        return await self.health.unreachable(since, self._probe)

    async def _probe(self, n: int) -> None:
        """`n` `info` attempts of the cache's own at once, none retried: each is one sample."""
        body = jsoncodec.dumps({"method_name": "info", "params": []})

        async def once() -> None:
            resp = await self.post_json(body, "info", lane=OWN, retry=False)
            await resp.aclose()
        await asyncio.gather(*(once() for _ in range(n)), return_exceptions=True)

    def _sample(self, lane: str, ok: bool) -> None:
        """One attempt's outcome; only the cache's own calls say how the site is."""
        if lane == OWN:
            self.health.record(ok)

    def _count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def call(self, method: str, params: Any = None, auth: Mapping[str, Any] | None = None,
                   *, lane: str = OWN, slot: AbstractAsyncContextManager[Any] | None = None) -> Any:
        """Call a method and return its `results`; faults from the site are raised as Fault.

        The cache's own calls by default; the auth check passes `lane=AUTH`. `slot` is held
        while the request is with the site and released before the answer is decoded: a
        full scan bounds its requests in flight with it, and decoding a page (~5 ms) is
        not a site request, so the next one takes the slot, and is sent, meanwhile.
        """
        plist: list[Any] = []
        if method != "info":
            plist.append(dict(auth) if auth is not None else self.script_auth)
        if params is not None:
            plist.append(params)
        body = jsoncodec.dumps({"method_name": method, "params": plist})
        async with slot if slot is not None else nullcontext():
            resp = await self.post_json(body, method, lane=lane)
        if slot is not None:
            # Let the request waiting on the slot go out first: decoding a page holds the
            # event loop for milliseconds, and that request would wait behind it. A full
            # scan's slots were then all busy 78% of the time, 96% with this.
            await asyncio.sleep(0)
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

    # -- raw HTTP (uploads, downloads): callers' traffic -----------------------------------
    async def stream(self, method: str, path: str, *, headers: Mapping[str, str],
                     body: AsyncIterator[bytes] | bytes | None, query: str = "") -> httpx.Response:
        """Send a caller's raw request on the transfer lane; the response body still streams.

        The caller bounds how long its body may take (`sgcache.serve.relay`): httpx's
        timeouts only cover waiting on the site.
        """
        client = self.clients[TRANSFER]
        url = path + (f"?{query}" if query else "")
        req = client.build_request(method, url, headers=headers, content=body)
        try:
            return await client.send(req, stream=True)
        except httpx.PoolTimeout as e:
            self._count_error(f"{TRANSFER}_pool_full")
            raise UpstreamBusy("sgcache has too many transfers to the site in flight; "
                                      "this one was not sent. Try again shortly.") from e
        except httpx.TimeoutException as e:
            self._count_error("timeout")
            raise UpstreamUnavailable(f"The site did not answer within {self.timeout.read:g}s.") from e
        except httpx.HTTPError as e:
            self._count_error(type(e).__name__)
            raise UpstreamUnavailable(f"The site could not be reached: {type(e).__name__}.") from e


def _unbound(resp: httpx.Response) -> httpx.Response:
    """A read response without the reference cycle httpx leaves in every response.

    httpx wraps a response's stream in an object that refers back to the response
    (encode/httpx#3733), so each response, its whole body included, lives until the
    cyclic garbage collector runs: a full scan's pages (half a megabyte each) piled up
    by the hundred in the scanning process. The body has been read and the stream
    closed: the response keeps its body as a plain stream instead."""
    resp.stream = httpx.ByteStream(resp.content)
    return resp


def make_upstream(config: Config, transport: httpx.AsyncBaseTransport | None = None) -> Upstream:
    """The cache's site client, as the config describes it (`transport` swaps the network in tests)."""
    limits = LaneLimits(own=config.upstream_own_connections, auth=config.upstream_auth_connections,
                        passthrough=config.upstream_passthrough_connections,
                        transfer=config.upstream_transfer_connections,
                        callers_wait=config.upstream_connect_timeout)
    return Upstream(config.shotgun_url, script_name=config.script_name, script_key=config.script_key,
                    timeout=config.upstream_timeout, connect_timeout=config.upstream_connect_timeout,
                    transport=transport, limits=limits)


async def fetch_site_schema(upstream: Upstream) -> Schema:
    """The site's whole schema, read with the cache's own script credentials."""
    schema_read = await upstream.call("schema_read")
    entity_read = await upstream.call("schema_entity_read")
    return Schema.from_site(schema_read, entity_read)
